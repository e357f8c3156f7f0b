"""Quality metrics for face reenactment and de-identification: pure functions on arrays.

Nothing here runs a model or reads a file; :mod:`reenact.evaluate.report` feeds these
functions with the detections, embeddings and landmarks it measured on both videos.

Conventions:
    frames are uint8 ``[T,H,W,3]`` RGB (numpy or torch); points are pixel ``(x, y)`` of the
    frame they were measured on (``[F,K,2]``); embeddings are ``[F,D]`` float (normalised
    here before use); affine matrices ``[F,2,3]`` map frame pixels to crop pixels; angles
    are degrees.
"""

from __future__ import annotations

import math
import pickle
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import torch

from reenact.errors import ModelError, ShapeError

#: PSNR of identical images is infinite; reports use this cap instead.
PSNR_CAP_DB = 100.0

#: Indices of the 68-point (iBUG 300-W) layout.
JAW = slice(0, 17)
NON_JAW = slice(17, 68)
RIGHT_EYE_OUTER = 36  # subject's right eye, outer corner (image left)
LEFT_EYE_OUTER = 45


def _as_float(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ShapeError(f"{name} contains NaN or infinite values")
    return arr


def _check_points(points: Any, name: str, k: int | None = None) -> np.ndarray:
    arr = _as_float(points, name)
    if arr.ndim != 3 or arr.shape[2] != 2 or (k is not None and arr.shape[1] != k):
        want = f"[F,{k},2]" if k is not None else "[F,K,2]"
        raise ShapeError(f"{name} must be {want} pixel points, got shape {tuple(arr.shape)}")
    return arr


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ShapeError(f"{name} contains an all-zero embedding; cannot normalise it")
    return np.asarray(x / norm)


def _check_embeddings(emb: Any, name: str) -> np.ndarray:
    arr = _as_float(emb, name)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ShapeError(f"{name} must be [F,D] embeddings, got shape {tuple(arr.shape)}")
    return _unit(arr, name)


# --- identity ------------------------------------------------------------------------------


def cosine_matrix(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of every row of ``a`` ``[N,D]`` with every row of ``b`` ``[M,D]`` -> ``[N,M]``."""
    ua = _check_embeddings(a, "a")
    ub = _check_embeddings(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise ShapeError(f"embedding sizes differ: {ua.shape[1]} vs {ub.shape[1]}")
    return np.asarray(ua @ ub.T)


def identity_similarity(embeddings: Any, target: Any) -> np.ndarray:
    """Per-frame cosine similarity ``[F]`` of ``embeddings`` ``[F,D]`` to one identity ``[D]``."""
    t = _as_float(target, "target")
    if t.ndim != 1:
        raise ShapeError(f"target must be one embedding [D], got shape {tuple(t.shape)}")
    return cosine_matrix(embeddings, t[None])[:, 0]


def nearest_is(embeddings: Any, gallery: Any, expected: Any) -> np.ndarray:
    """Whether each embedding's nearest gallery identity is ``expected`` -> bool ``[F]``.

    ``gallery`` is ``[G,D]`` (one row per identity); ``expected`` one gallery index or one per
    embedding ``[F]``.
    """
    sims = cosine_matrix(embeddings, gallery)
    want = np.broadcast_to(np.asarray(expected, dtype=np.int64), (sims.shape[0],))
    if np.any(want < 0) or np.any(want >= sims.shape[1]):
        raise ShapeError(f"expected gallery index out of range 0..{sims.shape[1] - 1}: {want}")
    return np.asarray(np.argmax(sims, axis=1) == want)


def adjacent_similarity(embeddings: Any) -> np.ndarray:
    """Cosine similarity of each frame's embedding with the next one's -> ``[F-1]`` (STIT TL-ID terms)."""
    u = _check_embeddings(embeddings, "embeddings")
    return np.asarray(np.sum(u[1:] * u[:-1], axis=1))


def global_identity_consistency(embeddings: Any) -> float:
    """STIT TG-ID term: mean cosine similarity over all pairs of frames of one track.

    Returns NaN for fewer than two frames.
    """
    u = _check_embeddings(embeddings, "embeddings")
    n = u.shape[0]
    if n < 2:
        return math.nan
    sims = u @ u.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


# --- attributes: pose and expression --------------------------------------------------------


class _MeanShapeUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise ModelError(f"mean face shape file references {module}.{name}; refusing to load it")
        return super().find_class(module, name)


@lru_cache(maxsize=1)
def mean_face_3d() -> np.ndarray:
    """The 3D mean face ``[68,3]`` (x right, y down, z towards the camera) shipped with insightface.

    Read with an unpickler that only allows numpy arrays.
    """
    try:
        ref = resources.files("insightface.data").joinpath("objects/meanshape_68.pkl")
        with ref.open("rb") as fh:
            shape = _MeanShapeUnpickler(fh).load()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelError(
            f"cannot read insightface's meanshape_68.pkl for head pose ({exc}); "
            "install insightface>=0.7.3"
        ) from exc
    arr = np.asarray(shape, dtype=np.float64)
    if arr.shape != (68, 3):
        raise ModelError(f"meanshape_68.pkl has shape {arr.shape}, expected (68, 3)")
    return arr


def _rotation_to_euler(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of rotation matrix ``r`` (x-y-z convention)."""
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy > 1e-6:
        pitch = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(-r[2, 0], sy)
        roll = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock
        pitch = math.atan2(-r[1, 2], r[1, 1])
        yaw = math.atan2(-r[2, 0], sy)
        roll = 0.0
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def head_pose(points68: Any) -> np.ndarray:
    """Head pose from 68 landmarks -> ``[F,3]`` (yaw, pitch, roll) in degrees.

    Fits a scaled-orthographic camera to the 3D mean face (least squares), takes the
    nearest rotation and reads its Euler angles; a frontal, upright face gives about zero.

    Conventions:
        ``points68`` is ``[F,68,2]`` pixel (x, y) of the frame.
    """
    pts = _check_points(points68, "points68", 68)
    model = mean_face_3d()
    homog = np.concatenate([model, np.ones((68, 1))], axis=1)  # [68,4]
    pinv = np.linalg.pinv(homog)  # [4,68]
    out = np.zeros((pts.shape[0], 3))
    for i, p in enumerate(pts):
        cam = (pinv @ p).T  # [2,4]: rows map model -> image x, y
        r1, r2 = cam[0, :3], cam[1, :3]
        n1, n2 = np.linalg.norm(r1), np.linalg.norm(r2)
        if n1 == 0 or n2 == 0:
            raise ShapeError(f"landmarks of frame {i} are degenerate (all points equal)")
        r1, r2 = r1 / n1, r2 / n2
        rot = np.stack([r1, r2, np.cross(r1, r2)])
        u, _, vt = np.linalg.svd(rot)
        rot = u @ vt
        if np.linalg.det(rot) < 0:
            rot = u @ np.diag([1.0, 1.0, -1.0]) @ vt
        out[i] = _rotation_to_euler(rot)
    return out


def pose_error(pose_a: Any, pose_b: Any) -> np.ndarray:
    """Absolute angle difference ``[F,3]`` (yaw, pitch, roll) in degrees, wrapped to [0, 180]."""
    a = _as_float(pose_a, "pose_a")
    b = _as_float(pose_b, "pose_b")
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ShapeError(f"poses must both be [F,3], got {a.shape} and {b.shape}")
    d = np.abs(a - b) % 360.0
    return np.asarray(np.minimum(d, 360.0 - d))


def interocular(points68: Any) -> np.ndarray:
    """Outer-eye-corner distance ``[F]`` in pixels (the usual landmark normaliser)."""
    pts = _check_points(points68, "points68", 68)
    return np.asarray(np.linalg.norm(pts[:, LEFT_EYE_OUTER] - pts[:, RIGHT_EYE_OUTER], axis=1))


def expression_error(points_a: Any, points_b: Any) -> np.ndarray:
    """Normalised landmark distance of the non-jaw points (brows, eyes, nose, mouth) -> ``[F]``.

    ``points_b`` is aligned onto ``points_a`` by a least-squares similarity (so position,
    scale and in-plane rotation do not count), then the mean point distance is divided by
    the inter-ocular distance of ``points_a``. 0 means the same expression.

    Conventions:
        both ``[F,68,2]`` pixel (x, y), the same frames in the same order.
    """
    a = _check_points(points_a, "points_a", 68)
    b = _check_points(points_b, "points_b", 68)
    if a.shape != b.shape:
        raise ShapeError(f"landmark arrays differ in shape: {a.shape} vs {b.shape}")
    iod = interocular(a)
    if np.any(iod <= 0):
        raise ShapeError("points_a has frames whose eye corners coincide (inter-ocular distance 0)")
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        pa = a[i, NON_JAW]
        pb = b[i, NON_JAW]
        ca, cb = pa.mean(0), pb.mean(0)
        xa, xb = pa - ca, pb - cb
        u, s, vt = np.linalg.svd(xb.T @ xa)
        d = np.sign(np.linalg.det(u @ vt)) or 1.0
        corr = np.diag([1.0, d])
        rot = u @ corr @ vt
        var_b = float((xb**2).sum())
        scale = float((s * np.diag(corr)).sum()) / var_b if var_b > 0 else 0.0
        aligned = scale * xb @ rot
        out[i] = float(np.linalg.norm(aligned - xa, axis=1).mean()) / iod[i]
    return out


# --- temporal -------------------------------------------------------------------------------


def landmark_jitter(points: Any, face_size: Any) -> np.ndarray:
    """Frame-to-frame acceleration of landmarks -> ``[F-2]``.

    Mean norm of ``p[t+1] - 2 p[t] + p[t-1]`` over the points, divided by the face size of
    frame ``t`` (e.g. its inter-ocular distance), for consecutive frames of one track.

    Conventions:
        ``points`` ``[F,K,2]`` pixel (x, y); ``face_size`` ``[F]`` pixels.
    """
    pts = _check_points(points, "points")
    size = _as_float(face_size, "face_size")
    if size.shape != (pts.shape[0],):
        raise ShapeError(f"face_size must be [F]={pts.shape[0]}, got shape {size.shape}")
    if pts.shape[0] < 3:
        return np.zeros(0)
    acc = pts[2:] - 2 * pts[1:-1] + pts[:-2]
    denom = np.where(size[1:-1] > 1e-6, size[1:-1], 1e-6)
    return np.asarray(np.linalg.norm(acc, axis=2).mean(axis=1) / denom)


def face_ellipse(size: int, fill: float = 0.8) -> torch.Tensor:
    """Bool ``[S,S]`` ellipse centred in an aligned crop, covering ``fill`` of its width."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = fill * size / 2
    return ((xs - size / 2) / (0.85 * r)) ** 2 + ((ys - size / 2) / r) ** 2 <= 1.0


def flicker(crops: Any, mask: Any | None = None) -> np.ndarray:
    """Mean absolute change, in 8-bit grey levels, inside the face region between
    consecutive crops -> ``[F-1]``.

    ``crops`` are consecutive frames of one face, each already warped by its own alignment
    transform (e.g. :func:`reenact.faces.align.align_faces`), so the face's motion is
    compensated and what remains is change of appearance: flicker, popping, texture crawl.

    Conventions:
        ``crops`` float ``[F,3,S,S]`` in [-1, 1]; ``mask`` bool ``[S,S]`` (default
        :func:`face_ellipse`).
    """
    c = torch.as_tensor(crops).float()
    if c.ndim != 4 or c.shape[1] != 3 or c.shape[2] != c.shape[3]:
        raise ShapeError(f"crops must be [F,3,S,S], got {tuple(c.shape)}")
    m = face_ellipse(c.shape[-1]) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if m.shape != c.shape[2:]:
        raise ShapeError(f"mask must be [S,S]={tuple(c.shape[2:])}, got {tuple(m.shape)}")
    if c.shape[0] < 2:
        return np.zeros(0)
    diff = (c[1:] - c[:-1]).abs().mean(1) * 127.5  # [F-1,S,S] in grey levels
    return diff[:, m].mean(1).double().numpy()


# --- background -----------------------------------------------------------------------------


def box_mask(height: int, width: int, boxes: Any, margin: float = 0.25) -> np.ndarray:
    """Bool ``[H,W]`` that is True inside the ``boxes`` ``[N,4]`` (x1,y1,x2,y2 pixels), each
    grown by ``margin`` of its size on every side."""
    b = _as_float(boxes, "boxes").reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in b:
        mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
        xa, ya = max(int(math.floor(x1 - mw)), 0), max(int(math.floor(y1 - mh)), 0)
        xb, yb = min(int(math.ceil(x2 + mw)), width), min(int(math.ceil(y2 + mh)), height)
        if xb > xa and yb > ya:
            mask[ya:yb, xa:xb] = True
    return mask


def masked_mse(frame_a: Any, frame_b: Any, exclude: Any) -> tuple[float, int]:
    """Sum of squared differences and the number of values compared, outside ``exclude``.

    Conventions:
        frames uint8 ``[H,W,3]`` RGB of the same size; ``exclude`` bool ``[H,W]``.
    """
    a = np.asarray(frame_a.numpy() if isinstance(frame_a, torch.Tensor) else frame_a)
    b = np.asarray(frame_b.numpy() if isinstance(frame_b, torch.Tensor) else frame_b)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ShapeError(
            f"frames must be uint8 [H,W,3] of the same size, got {a.shape} {a.dtype} and {b.shape} {b.dtype}"
        )
    ex = np.asarray(exclude, dtype=bool)
    if ex.shape != a.shape[:2]:
        raise ShapeError(f"exclude mask must be [H,W]={a.shape[:2]}, got {ex.shape}")
    keep = ~ex
    d = a[keep].astype(np.float64) - b[keep].astype(np.float64)
    return float((d * d).sum()), int(d.size)


def psnr_from_mse(sq_sum: float, count: int, cap_db: float = PSNR_CAP_DB) -> float:
    """PSNR in dB of 8-bit data from a sum of squared errors over ``count`` values, capped.

    Identical data (error 0) gives ``cap_db``; ``count`` 0 (nothing to compare) gives NaN.
    """
    if count <= 0:
        return math.nan
    mse = sq_sum / count
    if mse <= 0:
        return cap_db
    return min(cap_db, 10.0 * math.log10(255.0**2 / mse))


def summarize(values: Any) -> dict[str, float | int]:
    """mean / median / p95 / max / count of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": math.nan, "median": math.nan, "p95": math.nan, "max": math.nan, "count": 0}
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
        "count": int(arr.size),
    }
