"""Helpers for the eval tests: the fixture models, and short clips written with PyAV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np

from testing.models import MOBILEFACE, PFLD, SCRFD

D0 = "videos/liveportrait_d0.mp4"  # 512x512, 25 fps, one frontal face
KATIE = "videos/sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, another person
FRIENDS = "videos/mobileface_friends1.mp4"  # 1280x720, 25 fps, 5-7 people


def load_models(fixtures: Path):
    """SCRFD detector, MobileFace V2 identity (raw 0..255 input), PFLD landmarks."""
    from reenact.faces import OnnxArcFaceEncoder, make_detector
    from reenact.faces.landmarks import PfldLandmarks

    detector = make_detector("insightface", SCRFD.file(fixtures))
    identity = OnnxArcFaceEncoder(MOBILEFACE.file(fixtures), MOBILEFACE.mean, MOBILEFACE.std)
    landmarks = PfldLandmarks(PFLD.file(fixtures))
    return detector, identity, landmarks


def write_clip(path: Path, frames: Sequence[np.ndarray] | np.ndarray, fps: int = 25, crf: int = 12) -> Path:
    """Encode uint8 [T,H,W,3] RGB frames as H.264 (near-lossless by default)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height = int(frames[0].shape[1]), int(frames[0].shape[0])
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def edit_faces(
    frames: np.ndarray, boxes: list[np.ndarray], edit: Callable[[int, np.ndarray], np.ndarray], grow: float = 0.0
) -> np.ndarray:
    """Copy of ``frames`` with ``edit(t, region)`` applied to each face box (grown by ``grow``)."""
    out = frames.copy()
    h, w = frames.shape[1:3]
    for t, bs in enumerate(boxes):
        for x1, y1, x2, y2 in np.asarray(bs).reshape(-1, 4):
            gx, gy = (x2 - x1) * grow, (y2 - y1) * grow
            xa, ya = max(int(x1 - gx), 0), max(int(y1 - gy), 0)
            xb, yb = min(int(x2 + gx), w), min(int(y2 + gy), h)
            out[t, ya:yb, xa:xb] = edit(t, out[t, ya:yb, xa:xb])
    return out


def strong_blur(_t: int, region: np.ndarray) -> np.ndarray:
    """Pixelate (8 px) then Gaussian-blur (sigma 12) a face region."""
    from scipy.ndimage import gaussian_filter

    h, w = region.shape[:2]
    k = 8
    r = region.astype(np.float64)
    hh, ww = h // k * k, w // k * k
    small = r[:hh, :ww].reshape(hh // k, k, ww // k, k, 3).mean((1, 3))
    r[:hh, :ww] = np.repeat(np.repeat(small, k, 0), k, 1)
    return np.asarray(gaussian_filter(r, (12, 12, 0))).clip(0, 255).astype(np.uint8)


def flicker(t: int, region: np.ndarray) -> np.ndarray:
    """Alternate the face region's brightness by +-25 levels from frame to frame."""
    delta = 25 if t % 2 else -25
    return np.clip(region.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def erase(_t: int, region: np.ndarray) -> np.ndarray:
    """Flat grey: no face left."""
    return np.full_like(region, 128)
