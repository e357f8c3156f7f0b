"""The fixture ONNX models in one table: file, input size and input normalisation.

Each row is what ``shared/fixtures/README.md`` states about the file (see "models/"): the
network sees ``(pixels - mean) / std`` with pixels in ``0..input_scale`` (255: raw RGB
0..255, 1: RGB/255), at ``input_size`` x ``input_size``. MobileFace wants raw pixels
(mean 0, std 1): insightface's guess of 127.5/127.5 collapses its embeddings. Tests and
benches take paths and normalisation from here instead of spelling them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reenact.models.onnx_modules import OnnxModelSpec


@dataclass(frozen=True)
class FixtureModel:
    """One fixture model: ``path`` relative to the fixtures folder and how its input is prepared."""

    path: str
    input_size: int
    input_scale: float
    mean: float
    std: float

    def file(self, fixtures: Path) -> Path:
        """The model file inside the fixtures folder ``fixtures``."""
        return fixtures / self.path

    def spec(self, fixtures: Path) -> OnnxModelSpec:
        """The :class:`reenact.models.onnx_modules.OnnxModelSpec` of this model (torch twin, training)."""
        from reenact.models.onnx_modules import OnnxModelSpec

        return OnnxModelSpec(str(self.file(fixtures)), input_size=self.input_size, input_scale=self.input_scale,
                             mean=self.mean, std=self.std)


#: InsightFace SCRFD-500M detector with five keypoints (1x3x640x640 RGB, (x - 127.5) / 128)
SCRFD = FixtureModel("models/scrfd/scrfd_500m_kps.onnx", 640, 255.0, 127.5, 128.0)
#: MobileFace V2 identity embedding, 256-d (1x3x112x112 RGB raw 0..255, ArcFace alignment)
MOBILEFACE = FixtureModel("models/mobileface_recognition_onnx/mobileface_V2.onnx", 112, 255.0, 0.0, 1.0)
#: PFLD 68-point landmarks (Nx3x112x112 RGB/255 face crop -> [N,136] normalised x, y)
PFLD = FixtureModel("models/landmarks_pfld68/pfld.onnx", 112, 1.0, 0.0, 1.0)

FIXTURE_MODELS: dict[str, FixtureModel] = {"scrfd": SCRFD, "mobileface": MOBILEFACE, "pfld": PFLD}
"""Every fixture model the tests and benches use, by short name."""


def independent_judges(fixtures: Path) -> tuple[Any, Any]:
    """The detector and recogniser the benches judge the run's output with, none of which the
    run itself uses: the fixture SCRFD (score 0.5, no size floor) and MobileFace with its
    normalisation. Returns (detector, identity encoder)."""
    from reenact.faces.detect import DetectorSettings, make_detector
    from reenact.faces.identity import OnnxArcFaceEncoder

    detector = make_detector("insightface", SCRFD.file(fixtures), DetectorSettings(score_threshold=0.5, min_face_size=0))
    encoder = OnnxArcFaceEncoder(MOBILEFACE.file(fixtures), input_mean=MOBILEFACE.mean, input_std=MOBILEFACE.std)
    return detector, encoder
