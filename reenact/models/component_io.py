"""Our on-disk format for single model components converted from foreign files.

One ``.safetensors`` file per component: float32 tensors named by the PyTorch module's
``state_dict`` keys, and in the metadata the component kind (``reenact_component``), a
format version and the JSON constructor config. Written atomically; loaded strictly (a
missing, extra or mis-shaped tensor, another kind, or a config that does not build the
module is a :class:`ModelError` naming it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.errors import ModelError
from reenact.io.atomic import atomic_path

__all__ = ["COMPONENT_FORMAT", "save_component", "read_component", "load_state_strict"]

COMPONENT_FORMAT = "reenact-component-1"
_KIND_KEY = "reenact_component"
_CONFIG_KEY = "config"


def save_component(module: nn.Module, kind: str, config: dict[str, Any], path: str | Path) -> Path:
    """Write ``module``'s state as float32 safetensors with ``kind`` and ``config`` metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()
    }
    metadata = {"format": COMPONENT_FORMAT, _KIND_KEY: kind, _CONFIG_KEY: json.dumps(config, sort_keys=True)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise ModelError(f"cannot write {kind} to {path}: {exc.strerror or exc}") from exc
    return path


def read_component(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and tensors of a component file written by :func:`save_component`.

    Raises :class:`ModelError` when the file is missing, unreadable, or holds another kind.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{kind} file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get(_KIND_KEY) != kind:
        raise ModelError(
            f"{path} holds {meta.get(_KIND_KEY)!r}, expected a reenact {kind!r} component "
            "(convert the original files with `reenact models import`)"
        )
    if meta.get("format") != COMPONENT_FORMAT:
        raise ModelError(f"{path}: unknown component format {meta.get('format')!r}")
    try:
        config = json.loads(meta.get(_CONFIG_KEY, ""))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: config metadata is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: config metadata must be a JSON object, got {config!r}")
    return config, tensors


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; missing, extra or mis-shaped tensors raise ModelError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ModelError(
            f"{source}: tensors do not match {type(module).__name__}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
            f"{' ...' if len(extra) > 5 else ''}"
        )
    for name, value in own.items():
        if tuple(state[name].shape) != tuple(value.shape):
            raise ModelError(
                f"{source}: tensor {name!r} has shape {list(state[name].shape)}, expected "
                f"{list(value.shape)}"
            )
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    module.eval().requires_grad_(False)
