"""Training configuration: frozen dataclasses loaded strictly from YAML (``configs/train_*.yaml``).

Every number of the recipe is a field here. The authors' command-line flags map onto these
fields through :data:`reenact.cli.train.AUTHOR_FLAGS` (see README, "Training").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reenact.config import from_dict, load_yaml, replace
from reenact.errors import ConfigError
from reenact.models.encoders import AttributeEncoderConfig
from reenact.models.mapper import MapperConfig, WDiscriminatorConfig
from reenact.models.onnx_modules import OnnxModelSpec


@dataclass(frozen=True)
class GeneratorConfig:
    """The frozen generator: a converted weights file, or the seeded tiny one.

    ``kind``: ``stylegan2`` (default) or ``stylegan1`` (the paper's setting: a file written
    by ``reenact models import paper`` / ``convert_stylegan1``, with its mapping network,
    or ``pack:paper/generator``; ``null`` path: ``tiny_stylegan1(tiny_seed, resolution)``).

    ``path``: our safetensors+JSON generator (``reenact models import`` converts NVlabs
    ``.pkl`` files), or a pack component (``pack:full/generator``); ``null`` uses ``tiny_generator(tiny_seed, resolution)``.
    ``resolution``: the generator's output size; a loaded generator of another size is refused.
    """

    path: str | None = None
    resolution: int = 256
    tiny_seed: int = 0
    kind: str = "stylegan2"

    def __post_init__(self) -> None:
        if self.kind not in ("stylegan2", "stylegan1"):
            raise ConfigError(f"generator.kind must be stylegan2 or stylegan1, got {self.kind!r}")


@dataclass(frozen=True)
class DatasetConfig:
    """``make-dataset``: ``num_images`` samples at ``truncation_psi`` in shards of ``shard_size``."""

    path: str = "dataset"
    num_images: int = 70000
    shard_size: int = 1000
    batch_size: int = 16
    truncation_psi: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.shard_size < 1 or self.batch_size < 1:
            raise ConfigError("dataset.num_images, shard_size and batch_size must be >= 1")


@dataclass(frozen=True)
class FaceModelsConfig:
    """The frozen identity and landmark networks (ONNX, made differentiable with onnx2torch).

    ``identity_crop`` / ``landmark_crop``: where in the generator's FFHQ-aligned frame each
    network looks. The identity crop is the similarity from the FFHQ 5-point template to the
    ArcFace 112 template; the landmark crop is a box ``[x0, y0, x1, y1]`` in fractions of
    the frame. ``landmark_first``: index of the first landmark used (17 skips the jaw line).
    """

    identity: OnnxModelSpec = field(
        default_factory=lambda: OnnxModelSpec(path="", input_size=112, input_scale=255.0, mean=0.0, std=1.0)
    )
    landmarks: OnnxModelSpec = field(
        default_factory=lambda: OnnxModelSpec(path="", input_size=112, input_scale=1.0, mean=0.0, std=1.0)
    )
    landmark_box: tuple[float, float, float, float] = (0.125, 0.175, 0.875, 0.925)
    landmark_first: int = 17


@dataclass(frozen=True)
class LossConfig:
    """Loss weights of the recipe. Pixel loss: ``pixel * (ms_ssim * (1 - MS-SSIM) + l1 * masked L1)``
    on same-identity steps only; ``mask_sigma`` is the inverse-Gaussian mask's width in
    half-frame units (weight ``1 - exp(-r^2 / 2 sigma^2)``, normalised to mean 1)."""

    identity: float = 1.0
    landmarks: float = 0.001
    pixel: float = 0.02
    ms_ssim: float = 0.84
    l1: float = 0.16
    mask_sigma: float = 0.5
    ms_ssim_weights: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    ms_ssim_window: int = 11
    adversarial: float = 1.0
    r1_gamma: float = 10.0


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings and the step schedule (cross step every ``cross_frequency``-th step,
    discriminator every ``d_every``-th step)."""

    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    adv_g_lr_mult: float = 0.1
    d_lr_mult: float = 0.4
    cross_frequency: int = 3
    d_every: int = 2

    def __post_init__(self) -> None:
        if self.cross_frequency < 1 or self.d_every < 1:
            raise ConfigError("optim.cross_frequency and optim.d_every must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class RunConfig:
    """The run: where results go, how long, how often to evaluate / checkpoint / log.

    ``train_data_size``: use only the first N images of the dataset (0: all) minus the
    ``eval_size`` held-out images at the end. ``num_threads``: CPU threads for torch (0:
    torch's default; 1 is fastest on a busy shared CPU). ``resume``: a checkpoint file, or ``auto``
    for ``results_dir/last.safetensors`` when it exists.
    """

    results_dir: str = "results"
    steps: int = 100000
    batch_size: int = 8
    seed: int = 0
    train_data_size: int = 0
    eval_size: int = 8
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    num_workers: int = 2
    device: str = "auto"
    resume: str | None = None
    progress: bool = True
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.eval_size < 1:
            raise ConfigError("run.steps >= 0, run.batch_size >= 1 and run.eval_size >= 1 are required")
        for name in ("eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``reenact-train`` needs; written resolved next to every run."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    face_models: FaceModelsConfig = field(default_factory=FaceModelsConfig)
    attribute_encoder: AttributeEncoderConfig = field(default_factory=AttributeEncoderConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    discriminator: WDiscriminatorConfig = field(default_factory=WDiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.mapper.attr_dim != self.attribute_encoder.out_dim:
            raise ConfigError(
                f"mapper.attr_dim ({self.mapper.attr_dim}) must equal attribute_encoder.out_dim "
                f"({self.attribute_encoder.out_dim})"
            )
        if self.discriminator.w_dim != self.mapper.w_dim:
            raise ConfigError(
                f"discriminator.w_dim ({self.discriminator.w_dim}) must equal mapper.w_dim ({self.mapper.w_dim})"
            )

    def architecture(self) -> dict[str, Any]:
        """What a checkpoint's tensors depend on; resuming with a different one is refused."""
        from reenact.config import to_dict

        enc = to_dict(self.attribute_encoder)
        enc.pop("imagenet_init", None)
        enc.pop("imagenet_weights", None)
        return {
            "attribute_encoder": enc,
            "mapper": to_dict(self.mapper),
            "discriminator": to_dict(self.discriminator),
        }


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load ``path`` (or the defaults when ``None``) and apply dotted-key ``overrides``."""
    config = load_yaml(TrainConfig, path) if path is not None else from_dict(TrainConfig, {})
    if overrides:
        config = replace(config, overrides, where=str(path or "config"))
    return config
