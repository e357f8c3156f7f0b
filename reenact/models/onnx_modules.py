"""ONNX identity and landmark networks as frozen, differentiable torch modules.

``onnx2torch`` converts the ONNX graph into a torch module, so one model file serves both
inference and the training losses (gradients flow to the input image, never into the
network's own weights). Each model states its input normalisation explicitly
(:class:`OnnxModelSpec`); nothing is guessed, because a wrong guess silently collapses the
embeddings (see the fixture README's note on MobileFace).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ConfigError, ModelError
from reenact.models import registry
from reenact.shapes import check_shape


@dataclass(frozen=True)
class OnnxModelSpec:
    """An ONNX model file and how its input must be prepared.

    The network sees ``(pixels - mean) / std`` where ``pixels`` are RGB (or BGR when
    ``channel_order`` says so) in 0..255 (``input_scale: 255``) or 0..1 (``input_scale: 1``),
    at ``input_size`` x ``input_size``. ``path`` may use ``~`` and environment variables,
    or name a model pack component as ``pack:PACK/COMPONENT`` (``pack:full/identity``).
    """

    path: str = ""
    input_size: int = 112
    input_scale: float = 255.0
    mean: float = 0.0
    std: float = 1.0
    channel_order: Literal["RGB", "BGR"] = "RGB"

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ConfigError(f"input_size must be >= 8, got {self.input_size}")
        if self.std == 0:
            raise ConfigError("std must not be 0")

    def resolved_path(self) -> Path:
        """The model file (a missing pack component raises ``WeightsMissingError`` saying how to get it)."""
        return resolve_model_path(self.path)


def resolve_model_path(path: str) -> Path:
    """``pack:PACK/COMPONENT`` via the weight registry, else ``path`` with ``~`` and ``$VARS`` expanded."""
    if path.startswith("pack:"):
        pack, _, component = path[len("pack:") :].partition("/")
        return registry.resolve(pack, component)
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _convert(spec: OnnxModelSpec) -> nn.Module:
    from onnx2torch import convert

    path = spec.resolved_path()
    if not spec.path or not path.is_file():
        raise ModelError(f"ONNX model not found: {path or '(no path set)'}; set its path in the config")
    try:
        module: nn.Module = convert(str(path))
    except Exception as exc:  # onnx / onnx2torch raise many types for bad files
        raise ModelError(f"cannot convert ONNX model {path} with onnx2torch: {exc}") from exc
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class _FrozenOnnx(nn.Module):
    def __init__(self, spec: OnnxModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = _convert(spec)

    def train(self, mode: bool = True) -> _FrozenOnnx:
        # Frozen network: batch norm must keep its running statistics in every mode.
        super().train(mode)
        self.net.eval()
        return self

    def _prepare(self, img: torch.Tensor, name: str) -> torch.Tensor:
        size = self.spec.input_size
        check_shape(img, ["B", 3, size, size], f"{name} input img", dtype="float", what="in [-1,1]")
        x = (img + 1.0) * (0.5 * self.spec.input_scale)
        if self.spec.channel_order == "BGR":
            x = x.flip(1)
        return (x - self.spec.mean) / self.spec.std


class OnnxIdentity(_FrozenOnnx):
    """Aligned face crop -> L2-normalised identity embedding.

    Conventions:
        input ``img`` float ``[B,3,S,S]`` in [-1,1], RGB, aligned to the model's template
        (ArcFace 5-point for MobileFace); output float ``[B,D]`` with unit L2 norm.
    """

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        out = self.net(self._prepare(img, "OnnxIdentity"))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return F.normalize(out.flatten(1), dim=1)

    @property
    def dim(self) -> int:
        with torch.no_grad():
            size = self.spec.input_size
            return int(self.forward(torch.zeros(1, 3, size, size)).shape[1])


class OnnxLandmarks(_FrozenOnnx):
    """Face crop -> 68 landmarks in pixel coordinates of that crop.

    Conventions:
        input ``img`` float ``[B,3,S,S]`` in [-1,1], RGB face crop; output points float
        ``[B,68,2]`` as pixel (x, y) of the input crop (the model's normalised output x S).
    """

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        out = self.net(self._prepare(img, "OnnxLandmarks"))
        if isinstance(out, (list, tuple)):
            out = out[-1]
        points = out.reshape(out.shape[0], -1, 2)
        return points * float(self.spec.input_size)
