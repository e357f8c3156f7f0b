"""Compatibility name for the pack registry, kept for callers not yet moved.

Use ``from reenact.packs import registry`` (the registry with every kind's loader
registered) and ``reenact.packs.pack_generator`` instead; this module re-exports them and
will be removed once ``reenact.cli`` imports those. It is the one module under
``reenact.models`` allowed to import the pack layer (see ``.importlinter``).
"""

from __future__ import annotations

from reenact.models.registry import (
    Component,
    KindLoader,
    Normalisation,
    Pack,
    VerifyResult,
    cache_dir,
    component_path,
    download,
    get_component,
    get_pack,
    import_file,
    insightface_root,
    list_packs,
    models_dir,
    packs_dir,
    pull,
    resolve,
    sha256_file,
    verify,
)
from reenact.packs import pack_generator

__all__ = [
    "Component",
    "KindLoader",
    "Normalisation",
    "Pack",
    "VerifyResult",
    "cache_dir",
    "component_path",
    "download",
    "get_component",
    "get_pack",
    "import_file",
    "insightface_root",
    "list_packs",
    "models_dir",
    "pack_generator",
    "packs_dir",
    "pull",
    "resolve",
    "sha256_file",
    "verify",
]
