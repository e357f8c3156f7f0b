"""Attribute encoder: pose, expression and lighting of a face image as one code vector.

The paper's attribute encoder is an InceptionV3 (torchvision's architecture) whose
classifier is removed, giving a 2048-d code; it is trainable and initialised from ImageNet
where those weights already exist on this machine (they are never downloaded here). A
small convolutional backbone of configurable width stands in for it in tests and in the
CPU-sized ``tiny`` configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import ConfigError, ModelError
from reenact.shapes import check_shape

logger = logging.getLogger(__name__)

#: File name torchvision gives its ImageNet InceptionV3 weights in its hub cache.
INCEPTION_IMAGENET_FILE = "inception_v3_google-0cc3c7bd.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AttributeEncoderConfig:
    """Settings of the attribute encoder.

    ``backbone``: ``inception_v3`` (the paper's) or ``small`` (tests, tiny).
    ``out_dim``: size of the attribute code (2048 for InceptionV3's pooled features; for
    ``inception_v3`` any other value adds a linear projection).
    ``input_size``: images are resized to this square size before the backbone (InceptionV3
    needs at least 75; the paper feeds 299).
    ``imagenet_init``: start InceptionV3 from ImageNet weights if they are on this machine
    (``imagenet_weights`` or torchvision's hub cache); otherwise a warning and random init.
    ``small_channels``: channels of the small backbone's stride-2 conv stages.
    """

    backbone: Literal["inception_v3", "small"] = "inception_v3"
    out_dim: int = 2048
    input_size: int = 299
    imagenet_init: bool = True
    imagenet_weights: str | None = None
    small_channels: tuple[int, ...] = (32, 64, 128, 256)

    def __post_init__(self) -> None:
        if self.out_dim < 1:
            raise ConfigError(f"attribute_encoder.out_dim must be >= 1, got {self.out_dim}")
        if self.backbone == "inception_v3" and self.input_size < 75:
            raise ConfigError(
                f"attribute_encoder.input_size {self.input_size} is too small for InceptionV3; use >= 75"
            )
        if self.backbone == "small" and not self.small_channels:
            raise ConfigError("attribute_encoder.small_channels must list at least one stage")
        if self.input_size < 8:
            raise ConfigError(f"attribute_encoder.input_size must be >= 8, got {self.input_size}")


def find_imagenet_weights(config: AttributeEncoderConfig) -> Path | None:
    """Local ImageNet InceptionV3 weights: ``config.imagenet_weights`` or torchvision's cache."""
    if config.imagenet_weights:
        return Path(config.imagenet_weights).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_IMAGENET_FILE
    return cached if cached.is_file() else None


class _SmallBackbone(nn.Module):
    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.out_features = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _inception(config: AttributeEncoderConfig) -> nn.Module:
    from torchvision.models import Inception3

    net = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=True)
    if config.imagenet_init:
        path = find_imagenet_weights(config)
        if path is None or not path.is_file():
            logger.warning(
                "ImageNet InceptionV3 weights not found locally (%s); the attribute encoder "
                "starts from random initialisation. Put %s in %s or set "
                "attribute_encoder.imagenet_weights to use them.",
                path or "torchvision hub cache",
                INCEPTION_IMAGENET_FILE,
                Path(torch.hub.get_dir()) / "checkpoints",
            )
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises several types for bad files
                raise ModelError(f"cannot read ImageNet weights {path}: {exc}") from exc
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelError(
                    f"ImageNet weights {path} do not fit InceptionV3: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )
    net.fc = nn.Identity()
    return net


class AttributeEncoder(nn.Module):
    """Image -> attribute code.

    Conventions:
        input ``img`` float ``[B,3,H,W]`` in [-1,1] (any H, W; resized to ``input_size``);
        output float ``[B,out_dim]``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: AttributeEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone: nn.Module
        if config.backbone == "inception_v3":
            self.backbone = _inception(config)
            features = 2048
        else:
            small = _SmallBackbone(config.small_channels)
            self.backbone = small
            features = small.out_features
        self.proj: nn.Module = (
            nn.Identity() if features == config.out_dim else nn.Linear(features, config.out_dim)
        )
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_shape(img, ["B", 3, "H", "W"], "AttributeEncoder input img", dtype="float", what="in [-1,1]")
        size = self.config.input_size
        x = img
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = ((x + 1.0) * 0.5 - self.mean) / self.std
        out: torch.Tensor = self.proj(self.backbone(x))
        return out
