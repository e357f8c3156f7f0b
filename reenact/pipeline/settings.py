"""The pipeline's frozen settings tree: :class:`PipelineConfig` and its deidentify part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reenact.blend import BlendSettings
from reenact.errors import ConfigError
from reenact.faces import DetectorSettings
from reenact.faces.track import TrackerSettings
from reenact.io import EncodeSettings
from reenact.io.reader import ReadSettings
from reenact.models.optimize import OptimizeSettings
from reenact.packs import PackSettings
from reenact.temporal import SmoothingSettings

Mode = Literal["reenact", "deidentify"]


@dataclass(frozen=True)
class DeidentifySettings:
    """How synthetic identities are drawn and checked.

    ``threshold``: cosine similarity to the original person that an identity (drawn or
    rendered) must stay below; ``None`` uses the identity model's same-person threshold.
    ``max_draws``: identities drawn per track before giving up (the track is then blurred).
    ``truncation``: StyleGAN truncation of drawn identities. ``fail_closed``: blur every
    face-frame that could not be replaced or fails the check (never leave it as it was).
    """

    threshold: float | None = None
    max_draws: int = 32
    truncation: float = 0.7
    fail_closed: bool = True


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides what the pipeline does; written next to every output.

    ``seed`` seeds everything random in a run: the synthetic identities of ``deidentify``
    and the random starts of ``--mapper optimize``.
    """

    models: PackSettings = PackSettings()
    mapper: Literal["trained", "optimize"] = "trained"
    faces: str = "all"
    device: str = "auto"
    seed: int = 0
    max_batch: int = 32
    read: ReadSettings = ReadSettings()
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    smoothing: SmoothingSettings = SmoothingSettings()
    blend: BlendSettings = BlendSettings()
    encode: EncodeSettings = EncodeSettings()
    deidentify: DeidentifySettings = DeidentifySettings()
    optimize: OptimizeSettings = OptimizeSettings()

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest") and not self.faces.startswith("reference:"):
            raise ConfigError(f"faces must be all, largest or reference:IMAGE, got {self.faces!r}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
