"""Mapping network (identity code ++ attribute code -> StyleGAN w) and the W discriminator.

Also the on-disk format of a trained identity model (attribute encoder + mapper) as the
pipeline loads it: safetensors weights and a JSON architecture config, loaded strictly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.config import from_dict, to_dict
from reenact.errors import ConfigError, ModelError
from reenact.io.atomic import atomic_path, atomic_write_text
from reenact.models.encoders import AttributeEncoder, AttributeEncoderConfig
from reenact.models.onnx_modules import OnnxModelSpec
from reenact.shapes import check_shape


@dataclass(frozen=True)
class MapperConfig:
    """Mapping MLP: ``id_dim + attr_dim -> hidden... -> w_dim`` with LeakyReLU between layers.

    The paper's: 512 + 2048 = 2560 -> 2048 -> 1024 -> 512 -> 512, LeakyReLU 0.2, no
    activation after the last layer.
    """

    id_dim: int = 512
    attr_dim: int = 2048
    hidden: tuple[int, ...] = (2048, 1024, 512)
    w_dim: int = 512
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        for name in ("id_dim", "attr_dim", "w_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mapper.{name} must be >= 1, got {getattr(self, name)}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"mapper.hidden sizes must be >= 1, got {list(self.hidden)}")

    @property
    def in_dim(self) -> int:
        return self.id_dim + self.attr_dim


@dataclass(frozen=True)
class WDiscriminatorConfig:
    """W discriminator MLP: ``w_dim -> hidden... -> 1`` (paper: 512 -> 256 -> 128 -> 64 -> 1)."""

    w_dim: int = 512
    hidden: tuple[int, ...] = (256, 128, 64)
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        if self.w_dim < 1 or any(h < 1 for h in self.hidden):
            raise ConfigError(f"discriminator sizes must be >= 1, got {self.w_dim}, {list(self.hidden)}")


def _mlp(sizes: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class Mapper(nn.Module):
    """Concatenated (identity, attribute) code -> one w used for every style layer.

    Conventions:
        input ``codes`` float ``[B, id_dim + attr_dim]`` (identity embedding first);
        output ``w`` float ``[B, w_dim]``.
    """

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        self.net = _mlp([config.in_dim, *config.hidden, config.w_dim], config.negative_slope)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        check_shape(codes, ["B", self.config.in_dim], "Mapper input codes",
                    what=f"(identity {self.config.id_dim} ++ attribute {self.config.attr_dim})")
        out: torch.Tensor = self.net(codes)
        return out

    def map(self, id_code: torch.Tensor, attr_code: torch.Tensor) -> torch.Tensor:
        """``forward(cat(id_code, attr_code))``; shapes ``[B,id_dim]``, ``[B,attr_dim]`` -> ``[B,w_dim]``."""
        dims = check_shape(id_code, ["B", self.config.id_dim], "Mapper.map id_code")
        check_shape(attr_code, ["B", self.config.attr_dim], "Mapper.map attr_code", dims=dims)
        return self.forward(torch.cat([id_code, attr_code], dim=1))


class WDiscriminator(nn.Module):
    """Real-or-mapped w -> logit.

    Conventions: input ``w`` float ``[B, w_dim]``; output logits ``[B, 1]``.
    """

    def __init__(self, config: WDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.net = _mlp([config.w_dim, *config.hidden, 1], config.negative_slope)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        check_shape(w, ["B", self.config.w_dim], "WDiscriminator input w")
        out: torch.Tensor = self.net(w)
        return out


# --- exported identity model -----------------------------------------------------------------

IDENTITY_MODEL_JSON = "identity_model.json"
ATTR_ENCODER_FILE = "attribute_encoder.safetensors"
MAPPER_FILE = "mapper.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class IdentityModelConfig:
    """Architecture and provenance of an exported attribute encoder + mapper.

    ``identity`` is the identity network the mapper was trained on, with its input
    normalisation (the pipeline's embeddings must come from the same network, L2-normalised;
    ``path`` is only its file name); ``image_size`` is the generator
    resolution the attribute encoder saw during training; ``num_ws`` how many style layers
    the single w is repeated over.
    """

    attribute_encoder: AttributeEncoderConfig
    mapper: MapperConfig
    identity: OnnxModelSpec = field(default_factory=OnnxModelSpec)
    image_size: int = 256
    num_ws: int = 14
    step: int = 0
    format_version: int = FORMAT_VERSION


def save_identity_model(
    attr_encoder: AttributeEncoder, mapper: Mapper, config: IdentityModelConfig, out_dir: str | Path
) -> Path:
    """Write ``attribute_encoder.safetensors``, ``mapper.safetensors`` and ``identity_model.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for module, name in ((attr_encoder, ATTR_ENCODER_FILE), (mapper, MAPPER_FILE)):
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        with atomic_path(out / name) as tmp:
            save_file(state, str(tmp))
    atomic_write_text(out / IDENTITY_MODEL_JSON, json.dumps(to_dict(config), indent=2))
    return out


def _load_strict(module: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"identity model file missing: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the architecture needs "
                f"{tuple(expected[name].shape)}"
            )
    module.load_state_dict(state, strict=True)


def load_identity_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[AttributeEncoder, Mapper, IdentityModelConfig]:
    """Load an exported identity model (strictly) in eval mode.

    Returns ``(attribute_encoder, mapper, config)``; use
    ``w = mapper(torch.cat([id_embedding, attribute_encoder(crop)], 1))`` for every style layer.
    """
    root = Path(model_dir)
    meta_path = root / IDENTITY_MODEL_JSON
    if not meta_path.is_file():
        raise ModelError(f"{root} is not an identity model folder: {IDENTITY_MODEL_JSON} missing")
    try:
        data: Any = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from exc
    try:
        config = from_dict(IdentityModelConfig, data, where=str(meta_path))
    except ConfigError as exc:
        raise ModelError(str(exc)) from exc
    if config.format_version != FORMAT_VERSION:
        raise ModelError(
            f"{meta_path}: format_version {config.format_version} is not supported (expected {FORMAT_VERSION})"
        )
    if config.attribute_encoder.out_dim != config.mapper.attr_dim:
        raise ModelError(
            f"{meta_path}: attribute_encoder.out_dim {config.attribute_encoder.out_dim} != "
            f"mapper.attr_dim {config.mapper.attr_dim}"
        )
    from reenact.models.component_io import build_bounded, check_dims, file_shapes

    check_dims(dataclasses.asdict(config.mapper), ("id_dim", "attr_dim", "w_dim", "hidden"), str(meta_path))
    check_dims(dataclasses.asdict(config.attribute_encoder), ("out_dim", "input_size", "small_channels"),
               str(meta_path), limit=4096)
    enc_cfg = dataclasses.replace(config.attribute_encoder, imagenet_init=False)
    for file in (ATTR_ENCODER_FILE, MAPPER_FILE):
        if not (root / file).is_file():
            raise ModelError(f"identity model file missing: {root / file}")
    mapper = build_bounded(lambda: Mapper(config.mapper), str(root / MAPPER_FILE), file_shapes(root / MAPPER_FILE))
    encoder = build_bounded(lambda: AttributeEncoder(enc_cfg), str(root / ATTR_ENCODER_FILE),
                            file_shapes(root / ATTR_ENCODER_FILE))
    _load_strict(encoder, root / ATTR_ENCODER_FILE)
    _load_strict(mapper, root / MAPPER_FILE)
    return encoder.to(device).eval(), mapper.to(device).eval(), config
