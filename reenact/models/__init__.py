"""Networks, their on-disk formats, and the pack registry.

Layers inside: :mod:`reenact.models.spec` (pack/component descriptions, no imports) <
:mod:`reenact.models.registry` (pack files, cache, downloads, verification; no network
module) < the networks (:mod:`~reenact.models.stylegan2`, :mod:`~reenact.models.encoders`,
:mod:`~reenact.models.mapper`, :mod:`~reenact.models.onnx_modules`, converters in
:mod:`~reenact.models.convert`). The generator API is re-exported here, imported lazily so
``import reenact.models.spec`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Generator",
    "ffhq_config",
    "load_generator",
    "save_generator",
    "tiny_config",
    "tiny_generator",
]

if TYPE_CHECKING:
    from reenact.models.stylegan2 import (
        Generator,
        ffhq_config,
        load_generator,
        save_generator,
        tiny_config,
        tiny_generator,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reenact.models import stylegan2

        return getattr(stylegan2, name)
    raise AttributeError(f"module 'reenact.models' has no attribute {name!r}")
