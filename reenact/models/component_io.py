"""Our on-disk format for single model components converted from foreign files.

One ``.safetensors`` file per component: float32 tensors named by the PyTorch module's
``state_dict`` keys, and in the metadata the component kind (``reenact_component``), a
format version and the JSON constructor config. Written atomically; loaded strictly (a
missing, extra or mis-shaped tensor, another kind, or a config that does not build the
module is a :class:`ModelError` naming it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from reenact.errors import ModelError
from reenact.io.atomic import atomic_path

__all__ = [
    "COMPONENT_FORMAT", "MAX_PARAMS", "MAX_DIM", "save_component", "read_component", "load_state_strict",
    "build_bounded", "file_shapes", "check_dims", "read_component_header", "load_tensors",
]

#: Most parameters (and buffers) a model built from a file's config may have: 200 M
#: (800 MB in float32; NVIDIA's 1024 px generator has 33 M). A config asking for more is
#: refused before any tensor is allocated.
MAX_PARAMS = 200_000_000
#: Largest single width (z_dim, w_dim, hidden size...) a file's config may ask for.
MAX_DIM = 8192

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


def read_component_header(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The config and tensor shapes of a component file, from its header (no tensor read).

    Raises :class:`ModelError` when the file is missing, unreadable, holds another kind, or
    its tensors add up to more than :data:`MAX_PARAMS` values.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{kind} file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
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
    return config, file_shapes(path)


def load_tensors(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, after checking their total against :data:`MAX_PARAMS`.

    safetensors itself checks that each tensor lies inside the file, so nothing read is
    larger than the file; the count cap refuses a (sparse) file of absurd length first.
    """
    from safetensors.torch import load_file

    shapes = file_shapes(path) if shapes is None else shapes
    total = sum(_numel(shape) for shape in shapes.values())
    if total > MAX_PARAMS:
        raise ModelError(
            f"{path}: its tensors hold {total:,} values, more than the {MAX_PARAMS:,} allowed; "
            "refusing to read them (a corrupt or hostile file)"
        )
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def read_component(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and tensors of a component file written by :func:`save_component`.

    Raises :class:`ModelError` when the file is missing, unreadable, or holds another kind.
    Components whose config sizes the network read :func:`read_component_header` first and
    build through :func:`build_bounded` before loading the tensors.
    """
    config, shapes = read_component_header(path, kind)
    return config, load_tensors(path, shapes)


#: Most entries a list in a file's config (hidden widths, block channels) may have.
MAX_LIST = 64


def check_dims(config: dict[str, Any], keys: tuple[str, ...], source: str, limit: int = MAX_DIM) -> None:
    """Raise :class:`ModelError` when a width in ``config`` is not an int in ``0..limit``
    (or a list of more than :data:`MAX_LIST` of them)."""
    for key in keys:
        value = config.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if len(values) > MAX_LIST:
            raise ModelError(
                f"{source}: config {key} lists {len(values)} values, more than the {MAX_LIST} allowed; "
                "refusing to build it (a corrupt or hostile file)"
            )
        for v in values:
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
                raise ModelError(
                    f"{source}: config {key}={value!r} is outside the sane range 0..{limit}; "
                    "refusing to build it (a corrupt or hostile file)"
                )


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a ``.safetensors`` file, read from its header (no tensor loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def build_bounded(
    factory: Callable[[], ModuleT],
    source: str,
    shapes: dict[str, tuple[int, ...]] | None = None,
    max_params: int = MAX_PARAMS,
) -> ModuleT:
    """``factory()`` built first on the ``meta`` device (no memory) and checked, then for real.

    Raises :class:`ModelError` when the module would hold more than ``max_params`` values,
    when ``shapes`` (the file's tensors) do not match its state dict by name and shape, or
    when building runs out of memory -- so a tiny file claiming a huge architecture is
    refused before anything is allocated.
    """
    try:
        with torch.device("meta"):
            meta = factory()
    except MemoryError as exc:
        raise ModelError(f"{source}: the architecture does not fit in memory") from exc
    own = meta.state_dict()
    total = sum(int(v.numel()) for v in own.values())
    if total > max_params:
        raise ModelError(
            f"{source}: its config builds a model of {total:,} values, more than the {max_params:,} "
            "allowed; refusing to allocate it (a corrupt or hostile file)"
        )
    if shapes is not None:
        missing = sorted(set(own) - set(shapes))
        extra = sorted(set(shapes) - set(own))
        if missing or extra:
            raise ModelError(
                f"{source}: tensors do not match its config: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
            )
        for name, value in own.items():
            if tuple(shapes[name]) != tuple(value.shape):
                raise ModelError(
                    f"{source}: tensor {name} has shape {tuple(shapes[name])}, the config needs "
                    f"{tuple(value.shape)}"
                )
    del meta, own
    try:
        return factory()
    except MemoryError as exc:
        raise ModelError(f"{source}: not enough memory to build the model ({total:,} values)") from exc


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
