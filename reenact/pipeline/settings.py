"""The pipeline's frozen settings tree: :class:`PipelineConfig` and its deidentify part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reenact.blend import BlendSettings
from reenact.config import Mode
from reenact.errors import ConfigError
from reenact.faces import DetectorSettings
from reenact.faces.cadence import DetectionCadence
from reenact.faces.track import TrackerSettings
from reenact.io import EncodeSettings
from reenact.io.reader import ReadSettings
from reenact.mapping.optimize import OptimizeSettings
from reenact.packs import PackSettings
from reenact.temporal import SmoothingSettings

__all__ = ["DeidentifySettings", "Mode", "PipelineConfig", "parse_faces"]

Method = Literal["auto", "synthetic", "blur", "pixelate", "solid"]
HeadRedaction = Literal["pixelate", "blur"]


@dataclass(frozen=True)
class DeidentifySettings:
    """How faces are de-identified, checked and escalated (one place per setting).

    ``method``: ``auto`` (the default: ``synthetic`` with a trained pack, ``blur`` with an
    untrained one, whose synthetic faces are colour blobs; the run says which in one line),
    ``synthetic`` (a synthetic identity per track) or a classic redaction of the face's shape:
    ``blur``, ``pixelate`` or ``solid`` (these load no generator or mapper). Every method runs
    the same detection, tracking, privacy check, escalation ladder and fail-closed rules
    (:mod:`reenact.pipeline.privacy`).

    ``threshold``: for *drawing* synthetic identities only: a drawn identity code must stay
    below this cosine similarity to the track's original face in the pack identity model's
    space (the code the mapper gets); ``None`` uses the pack's same-person threshold.
    ``privacy_threshold``: for the *output check* only: every checker (identity model x
    chip) must see the output face below this similarity to the original; ``None`` uses the
    calibrated per model and chip threshold (:mod:`reenact.faces.privacy_thresholds`).
    ``max_draws``: identities drawn per track when the track starts. ``redraws``: ladder
    rung (a), further identities drawn per track after its output failed the check.
    ``grown_mask_scale``: rung (b), the blend mask's ``mask_scale`` is multiplied by it so
    the synthetic face also covers forehead and jaw. ``head_redaction``: how the head box is redacted
    when the face-shaped redaction and the face-shaped fill (its context alone) still fail the
    check: ``blur`` (the default) or ``pixelate``; the head box is the bounds of the face-shaped region (forehead to chin, ear
    to ear, to the hairline: :mod:`reenact.blend.redact`), never wider than the head.
    ``synthetic_min_face``: (synthetic) a face whose box has a side under this many pixels
    starts on the face-shaped blur instead of getting a synthetic identity (0: never). At
    112 px (the input size of ArcFace-family recognisers) and below, a synthetic face keeps
    hair, head shape and colours that let an independent recogniser pick the person out in
    the fixture crowd clips, where the redacted head box does not (``bench/privacy.py``).
    ``truncation``: StyleGAN truncation of drawn identities. ``fail_closed``: redact every
    face-frame that could not be replaced, checked or fails every rung (never leave it as it
    was; the last rung is a solid fill of the head box).
    """

    method: Method = "auto"
    threshold: float | None = None
    privacy_threshold: float | None = None
    max_draws: int = 32
    redraws: int = 3
    grown_mask_scale: float = 1.35
    head_redaction: HeadRedaction = "blur"
    synthetic_min_face: float = 112.0
    truncation: float = 0.7
    fail_closed: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("auto", "synthetic", "blur", "pixelate", "solid"):
            raise ConfigError(
                f"deidentify.method must be auto, synthetic, blur, pixelate or solid, got {self.method!r}")
        if self.head_redaction not in ("pixelate", "blur"):
            raise ConfigError(f"deidentify.head_redaction must be pixelate or blur, got {self.head_redaction!r}")
        if self.privacy_threshold is not None and not -1.0 <= self.privacy_threshold <= 1.0:
            raise ConfigError(
                f"deidentify.privacy_threshold is a cosine similarity in [-1, 1], got {self.privacy_threshold}")
        if self.redraws < 0:
            raise ConfigError(f"deidentify.redraws must be >= 0, got {self.redraws}")
        if not 1.0 <= self.grown_mask_scale <= 3.0:
            raise ConfigError(f"deidentify.grown_mask_scale must be in [1, 3], got {self.grown_mask_scale}")
        if not self.synthetic_min_face >= 0.0:
            raise ConfigError(f"deidentify.synthetic_min_face must be >= 0 pixels, got {self.synthetic_min_face}")


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
        parse_faces(self.faces)
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        # the cadence against the tracker's gap filling, before any file is opened; the mode's
        # default cadence is checked when the run builds it (FaceReplacer)
        DetectionCadence.check(self.detector.full_every or 1, self.tracker.fill_gap)


def parse_faces(faces: str) -> tuple[Literal["all", "largest", "reference"], Path | None]:
    """``faces`` (``all``, ``largest`` or ``reference:IMAGE``) as (choice, reference photo path):
    the one place the setting's text is read (a run plan holds the typed value)."""
    if faces in ("all", "largest"):
        return faces, None  # type: ignore[return-value]
    if faces.startswith("reference:") and faces.split(":", 1)[1]:
        return "reference", Path(faces.split(":", 1)[1])
    raise ConfigError(f"faces must be all, largest or reference:IMAGE, got {faces!r}")
