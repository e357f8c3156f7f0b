"""reenact: change who appears in a video, keep everything else.

Public API (imported lazily, so ``import reenact`` stays light): :class:`Reenactor`,
:class:`Deidentifier`, :class:`PipelineConfig`, :func:`load_pack`, ``__version__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Deidentifier", "PipelineConfig", "Reenactor", "__version__", "load_pack"]

if TYPE_CHECKING:
    from reenact.api import Deidentifier, Reenactor
    from reenact.packs import load_pack
    from reenact.pipeline import PipelineConfig

_LAZY = {
    "Reenactor": "reenact.api",
    "Deidentifier": "reenact.api",
    "PipelineConfig": "reenact.pipeline",
    "load_pack": "reenact.packs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reenact' has no attribute {name!r}")
