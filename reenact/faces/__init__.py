"""Faces: detection, tracking, alignment and identity (backends behind small protocols)."""

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

__all__ = [
    "CenterFaceDetector",
    "DetectorSettings",
    "DlibFaceEncoder",
    "FaceDetections",
    "FaceDetector",
    "FaceTracker",
    "IdentityEncoder",
    "IdentityPhoto",
    "InsightFaceDetector",
    "OnnxArcFaceEncoder",
    "TrackedFaces",
    "TrackerSettings",
    "arcface_template",
    "cosine_similarity",
    "ffhq_template",
    "identity_from_photo",
    "invert_affine",
    "make_detector",
    "similarity_from_points",
    "track_video",
    "transform_points",
    "warp_from_crop",
    "warp_to_crop",
]
