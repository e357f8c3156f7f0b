"""The paper's latent mapping network (Nitzan et al. 2020), read from the authors' Keras file.

``LatentMappingNetwork.h5`` (the authors' ``my_save``) holds four Dense layers,
2560 -> 2048 -> 1024 -> 512 -> 512, Keras kernels ``[in, out]``, with LeakyReLU 0.2 *between*
layers and none after the last. It is the project's :class:`reenact.models.mapper.Mapper`
with the default :class:`MapperConfig`, so a converted paper mapper runs wherever a trained
one does. The authors broadcast the one W to every style row; :func:`broadcast_w` does that.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from reenact.config import from_dict
from reenact.errors import ModelError, ShapeError
from reenact.models.component_io import (
    build_bounded,
    check_dims,
    load_state_strict,
    load_tensors,
    read_component_header,
    save_component,
)
from reenact.models.mapper import Mapper, MapperConfig
from reenact.models.readers.keras_h5 import match_layers, read_keras_layers

__all__ = [
    "PAPER_MAPPER_KIND",
    "num_ws_for_resolution",
    "broadcast_w",
    "mapper_from_keras_h5",
    "save_paper_mapper",
    "load_paper_mapper",
]

PAPER_MAPPER_KIND = "paper_mapper"


def num_ws_for_resolution(resolution: int) -> int:
    """StyleGAN v1's number of style rows, ``2*log2(resolution) - 2`` (8 at 32, 14 at 256)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ShapeError(f"resolution must be a power of two >= 4, got {resolution}")
    return 2 * int(math.log2(resolution)) - 2


def broadcast_w(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """One W per sample repeated over the style rows, as the authors' mapper returns it.

    Conventions: ``w`` float ``[B, w_dim]`` -> float ``[B, num_ws, w_dim]`` (a view).
    """
    if w.ndim != 2:
        raise ShapeError(f"broadcast_w expects [B, w_dim], got {tuple(w.shape)}")
    if num_ws < 1:
        raise ShapeError(f"num_ws must be >= 1, got {num_ws}")
    return w[:, None, :].expand(w.shape[0], num_ws, w.shape[1])


def mapper_from_keras_h5(path: str | Path, config: MapperConfig | None = None) -> Mapper:
    """Build a :class:`Mapper` from the authors' ``LatentMappingNetwork.h5``.

    The Dense layers are matched by load order, role and shape (auto names such as
    ``dense_3`` may be offset in files written by another process). A file from another
    network raises :class:`ModelError` naming the tensor.
    """
    config = config or MapperConfig()
    mapper = Mapper(config)
    linears = [m for m in mapper.net if isinstance(m, torch.nn.Linear)]
    expected = [
        (("kernel", "bias"), ((lin.in_features, lin.out_features), (lin.out_features,)))
        for lin in linears
    ]
    layers = match_layers(read_keras_layers(path), expected, path, "the paper's LatentMappingNetwork")
    state: dict[str, torch.Tensor] = {}
    names = [n for n, m in mapper.net.named_children() if isinstance(m, torch.nn.Linear)]
    for name, layer in zip(names, layers, strict=True):
        kernel, bias = (np.asarray(a, dtype=np.float32) for _, a in layer.weights)
        state[f"net.{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
        state[f"net.{name}.bias"] = torch.from_numpy(bias.copy())
    load_state_strict(mapper, state, str(path))
    return mapper


def save_paper_mapper(mapper: Mapper, path: str | Path) -> Path:
    """Store a mapper in our format (safetensors + JSON config in the metadata)."""
    config = asdict(mapper.config)
    config["hidden"] = list(config["hidden"])
    return save_component(mapper, PAPER_MAPPER_KIND, config, path)


def load_paper_mapper(path: str | Path) -> Mapper:
    """Load a mapper written by :func:`save_paper_mapper` (strict; eval; no gradients).

    The JSON config is bounded and the network sized against the file's tensor shapes
    before any tensor is allocated or read.
    """
    raw, shapes = read_component_header(path, PAPER_MAPPER_KIND)
    check_dims(raw, ("id_dim", "attr_dim", "w_dim", "hidden"), str(path))
    try:
        config = from_dict(MapperConfig, raw)
    except Exception as exc:
        raise ModelError(f"{path}: invalid mapper config {raw!r}: {exc}") from exc
    mapper = build_bounded(lambda: Mapper(config), str(path), shapes)
    load_state_strict(mapper, load_tensors(path, shapes), str(path))
    return mapper
