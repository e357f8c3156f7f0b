"""Faces: detection, tracking, alignment and identity (backends behind small protocols).

The names below are imported when first used (PEP 562), so importing one light submodule
(``reenact.faces.detect``, ``reenact.faces.cadence``, ``reenact.faces.early``) does not load
torch through this package: a run detects its first frames while torch is being imported
(:mod:`reenact.faces.early`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reenact.faces.align import (
        arcface_template,
        ffhq_template,
        invert_affine,
        similarity_from_points,
        transform_points,
        warp_from_crop,
        warp_to_crop,
    )
    from reenact.faces.detect import (
        CenterFaceDetector,
        DetectorSettings,
        FaceDetections,
        FaceDetector,
        InsightFaceDetector,
        make_detector,
    )
    from reenact.faces.identity import (
        DlibFaceEncoder,
        IdentityEncoder,
        IdentityPhoto,
        OnnxArcFaceEncoder,
        cosine_similarity,
        identity_from_photo,
    )
    from reenact.faces.track import FaceTracker, TrackedFaces, TrackerSettings, track_video

_MODULES = {
    "align": ("arcface_template", "ffhq_template", "invert_affine", "similarity_from_points", "transform_points",
              "warp_from_crop", "warp_to_crop"),
    "detect": ("CenterFaceDetector", "DetectorSettings", "FaceDetections", "FaceDetector", "InsightFaceDetector",
               "make_detector"),
    "identity": ("DlibFaceEncoder", "IdentityEncoder", "IdentityPhoto", "OnnxArcFaceEncoder", "cosine_similarity",
                 "identity_from_photo"),
    "track": ("FaceTracker", "TrackedFaces", "TrackerSettings", "track_video"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "CenterFaceDetector", "DetectorSettings", "DlibFaceEncoder", "FaceDetections", "FaceDetector", "FaceTracker",
    "IdentityEncoder", "IdentityPhoto", "InsightFaceDetector", "OnnxArcFaceEncoder", "TrackedFaces", "TrackerSettings",
    "arcface_template", "cosine_similarity", "ffhq_template", "identity_from_photo", "invert_affine", "make_detector",
    "similarity_from_points", "track_video", "transform_points", "warp_from_crop", "warp_to_crop",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"reenact.faces.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'reenact.faces' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
