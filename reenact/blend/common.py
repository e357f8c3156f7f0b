"""Settings, statistics, input checks and the per-face plan shared by every blend backend.

The plan is what the three implementations (torch reference, numba, cupy) agree on before
any pixel is touched: which faces are pasted, skipped or refused, the inverse transform of
each face and its region of interest (ROI) in the frame. Keeping it in one place means the
backends differ only in how they compute pixels, never in which pixels they touch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from reenact.errors import ConfigError, ShapeError
from reenact.shapes import Dim, check_same_device, check_shape

log = logging.getLogger(__name__)

ColourMatch = Literal["stats", "histogram", "none"]
ColourSpace = Literal["ycbcr", "lab", "rgb"]
BadFacePolicy = Literal["refuse", "raise"]
Impl = Literal["auto", "torch", "numba", "cupy"]
IMPLS = ("auto", "torch", "numba", "cupy")

# Integer codes the kernels use (numba and CUDA take no strings).
MATCH_CODES = {"none": 0, "stats": 1, "histogram": 2}
SPACE_CODES = {"rgb": 0, "ycbcr": 1, "lab": 2}

# Value range of each channel of each colour space, used for histogram bins.
SPACE_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "rgb": ((0.0, 255.0), (0.0, 255.0), (0.0, 255.0)),
    "ycbcr": ((0.0, 255.0), (0.0, 255.0), (0.0, 255.0)),
    "lab": ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0)),
}

# Per-face status codes of a plan.
PASTE, SKIPPED, REFUSED = 0, 1, 2


@dataclass(frozen=True)
class BlendSettings:
    """How generated faces are pasted back into their frames.

    Mask sizes (``erosion``, ``feather``, ``blur``) are fractions of the crop size, so one
    setting works for any generator resolution.

    - ``erosion``: how far the face outline is moved inwards before feathering.
    - ``feather``: width of the soft ramp from 0 to 1 inside the eroded outline.
    - ``blur``: extra Gaussian blur (sigma) of the mask; 0 for none.
    - ``mask_scale``: size of the face ellipse relative to the default fit to the 5 points.
    - ``colour_match``: "stats" (per-channel mean/std transfer), "histogram" (per-channel
      histogram matching) or "none".
    - ``colour_space``: where colours are matched: "ycbcr" (BT.601 full range), "lab"
      (CIE L*a*b*, D65) or "rgb".
    - ``max_gain``: clamp of the std ratio in "stats" mode (keeps flat regions sane).
    - ``histogram_bins``: bins per channel in "histogram" mode.
    - ``laplacian`` / ``levels``: Laplacian-pyramid blend of the face into the frame.
    - ``on_bad_face``: a face with NaN/inf is "refuse"d (counted, not written) or "raise"s.
    - ``impl``: "auto", "torch", "numba" or "cupy": which implementation pastes
      (:mod:`reenact.blend`; auto is cupy on CUDA, the torch reference elsewhere).
    """

    erosion: float = 0.02
    feather: float = 0.06
    blur: float = 0.0
    mask_scale: float = 1.0
    colour_match: ColourMatch = "stats"
    colour_space: ColourSpace = "ycbcr"
    max_gain: float = 2.0
    histogram_bins: int = 64
    laplacian: bool = False
    levels: int = 4
    on_bad_face: BadFacePolicy = "refuse"
    impl: Impl = "auto"

    def __post_init__(self) -> None:
        checks = [
            ("erosion", self.erosion, 0.0 <= self.erosion < 0.5, "in [0, 0.5)"),
            ("feather", self.feather, 0.0 <= self.feather < 0.5, "in [0, 0.5)"),
            ("blur", self.blur, 0.0 <= self.blur < 0.25, "in [0, 0.25)"),
            ("mask_scale", self.mask_scale, 0.1 <= self.mask_scale <= 3.0, "in [0.1, 3]"),
            ("max_gain", self.max_gain, self.max_gain >= 1.0, ">= 1"),
            ("histogram_bins", self.histogram_bins, 2 <= self.histogram_bins <= 1024, "in [2, 1024]"),
            ("levels", self.levels, 1 <= self.levels <= 10, "in [1, 10]"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"blend.{name} = {value!r} must be {rule}")
        choices: dict[str, tuple[str, dict[str, int]]] = {
            "colour_match": (self.colour_match, MATCH_CODES),
            "colour_space": (self.colour_space, SPACE_CODES),
            "on_bad_face": (self.on_bad_face, {"refuse": 0, "raise": 1}),
            "impl": (self.impl, {name: 0 for name in IMPLS}),
        }
        for name, (choice, allowed) in choices.items():
            if choice not in allowed:
                raise ConfigError(f"blend.{name} = {choice!r} must be one of {sorted(allowed)}")


@dataclass
class BlendStats:
    """What one :func:`reenact.blend.paste_faces` call did.

    ``skipped`` faces lie entirely outside their frame (nothing to paste); ``refused``
    faces were not written because they contain NaN/inf. ``impl`` is the backend used.
    """

    pasted: int = 0
    skipped: int = 0
    refused: int = 0
    skipped_indices: list[int] = field(default_factory=list)
    refused_indices: list[int] = field(default_factory=list)
    impl: str = ""


@dataclass(frozen=True)
class Plan:
    """Per-face decisions shared by all backends (numpy, on the host).

    ``M``/``Minv`` are float64 ``[F,2,3]`` (frame->crop and crop->frame), ``roi`` int64
    ``[F,4]`` as inclusive ``x0, y0, x1, y1`` frame pixels, ``status`` int64 ``[F]``,
    ``mask_of`` int64 ``[F]`` the mask row each face uses, ``levels`` int64 ``[F]`` the
    pyramid levels each face's ROI allows.
    """

    M: np.ndarray
    Minv: np.ndarray
    roi: np.ndarray
    status: np.ndarray
    mask_of: np.ndarray
    levels: np.ndarray
    frame_index: np.ndarray

    def stats(self, impl: str) -> BlendStats:
        skipped = [int(i) for i in np.flatnonzero(self.status == SKIPPED)]
        refused = [int(i) for i in np.flatnonzero(self.status == REFUSED)]
        return BlendStats(
            pasted=int((self.status == PASTE).sum()),
            skipped=len(skipped),
            refused=len(refused),
            skipped_indices=skipped,
            refused_indices=refused,
            impl=impl,
        )


_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_inputs(
    frames: torch.Tensor,
    faces: torch.Tensor,
    frame_index: torch.Tensor,
    M: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """Raise :class:`ShapeError` naming the shapes when the inputs do not fit together.

    Conventions: frames uint8 [T,H,W,3]; faces float [F,3,R,R] in [-1,1]; frame_index
    int64 [F]; M float [F,2,3] mapping frame pixels to crop pixels; mask float [R,R] or
    [F,R,R] in [0,1]. All on one device.
    """
    dims = check_shape(frames, ["T", "H", "W", 3], "frames", dtype=torch.uint8, what="RGB")
    check_shape(faces, ["F", 3, "R", "R"], "faces", dtype=_FLOATS, dims=dims, what="in [-1,1]")
    n, size = dims["F"], dims["R"]
    if size < 2:
        raise ShapeError(f"faces must be at least 2x2 pixels, got {tuple(faces.shape)}")
    check_shape(frame_index, ["F"], "frame_index", dtype=(torch.int64, torch.int32), dims=dims,
                what="(one frame per face)")
    check_shape(M, ["F", 2, 3], "M", dtype="float", dims=dims)
    mask_layout: list[Dim] = ["R", "R"] if getattr(mask, "ndim", 0) == 2 else ["F", "R", "R"]
    check_shape(mask, mask_layout, "mask", dtype="float", dims=dims, what="in [0,1], matching faces")
    check_same_device(frames=frames, faces=faces, frame_index=frame_index, M=M, mask=mask)
    if n and frames.shape[0]:
        lo, hi = int(frame_index.min()), int(frame_index.max())
        if lo < 0 or hi >= frames.shape[0]:
            raise ShapeError(
                f"frame_index values must be in [0, T-1]=[0, {frames.shape[0] - 1}], got {lo}..{hi}"
            )
    elif n:
        raise ShapeError(f"{n} faces given but frames has no frame: {tuple(frames.shape)}")


def pyramid_levels(height: int, width: int, levels: int) -> int:
    """Pyramid levels a ROI of ``height x width`` allows (coarsest level at least 2 px)."""
    smallest = max(1, min(height, width))
    return max(1, min(levels, int(math.floor(math.log2(smallest)))))


def make_plan(
    frames: torch.Tensor,
    faces: torch.Tensor,
    frame_index: torch.Tensor,
    M: torch.Tensor,
    mask: torch.Tensor,
    settings: BlendSettings,
) -> Plan:
    """Decide, per face, paste / skip / refuse, and compute inverse transforms and ROIs.

    Raises :class:`ShapeError` for a singular or non-finite transform, and for a NaN/inf
    face when ``settings.on_bad_face == "raise"``.
    """
    n = faces.shape[0]
    height, width = int(frames.shape[1]), int(frames.shape[2])
    size = int(faces.shape[2])
    M64 = M.detach().to("cpu", torch.float64).numpy().reshape(n, 2, 3).copy()
    fidx = frame_index.detach().to("cpu", torch.int64).numpy().copy()
    per_face_mask = mask.dim() == 3
    mask_of = np.arange(n, dtype=np.int64) if per_face_mask else np.zeros(n, dtype=np.int64)
    if faces.device.type == "cpu":
        # numpy, single-threaded: torch's thread pool would fight numba's right after.
        faces_np = faces.detach()
        if faces_np.dtype not in (torch.float32, torch.float64):
            faces_np = faces_np.to(torch.float32)
        finite = np.isfinite(faces_np.numpy().reshape(n, -1)).all(axis=1) if n else np.zeros(0, dtype=bool)
        support_np: np.ndarray = np.asarray(mask.detach().to(torch.float32).numpy().reshape(-1, size, size) > 0)
        rows_any = np.asarray(support_np.any(axis=2))
        cols_any = np.asarray(support_np.any(axis=1))
    else:
        finite = torch.isfinite(faces.detach()).reshape(n, -1).all(dim=1).cpu().numpy() if n else np.zeros(0, dtype=bool)
        # Bounding box of the mask support in crop pixels, per mask row.
        support = (mask.detach() > 0).reshape(-1, size, size)
        rows_any = support.any(dim=2).cpu().numpy()
        cols_any = support.any(dim=1).cpu().numpy()

    Minv = np.zeros_like(M64)
    roi = np.zeros((n, 4), dtype=np.int64)
    status = np.full(n, PASTE, dtype=np.int64)
    levels = np.ones(n, dtype=np.int64)
    for i in range(n):
        A = M64[i, :, :2]
        if not np.all(np.isfinite(M64[i])):
            raise ShapeError(f"M[{i}] is not finite: {M64[i].tolist()}; check the face alignment")
        det = float(np.linalg.det(A))
        scale = float(np.abs(A).max())
        if scale == 0.0 or abs(det) < 1e-10 * max(scale * scale, 1e-30) or abs(det) < 1e-12:
            raise ShapeError(
                f"M[{i}] = {M64[i].tolist()} is singular (det {det:.3g}); a face transform must "
                "be invertible: check the face's points"
            )
        Ainv = np.linalg.inv(A)
        Minv[i, :, :2] = Ainv
        Minv[i, :, 2] = -Ainv @ M64[i, :, 2]
        if not finite[i]:
            if settings.on_bad_face == "raise":
                raise ShapeError(
                    f"face {i} (frame {int(fidx[i])}) contains NaN or inf; refusing to paste it"
                )
            status[i] = REFUSED
            log.warning("face %d (frame %d) contains NaN or inf: refused, frame left as is", i, fidx[i])
            continue
        r_any, c_any = rows_any[mask_of[i]], cols_any[mask_of[i]]
        if not r_any.any():
            status[i] = SKIPPED
            continue
        r0, r1 = int(np.argmax(r_any)), int(size - 1 - np.argmax(r_any[::-1]))
        c0, c1 = int(np.argmax(c_any)), int(size - 1 - np.argmax(c_any[::-1]))
        # Bilinear sampling reaches one pixel beyond the support.
        corners = np.array(
            [[c0 - 1, r0 - 1], [c1 + 1, r0 - 1], [c0 - 1, r1 + 1], [c1 + 1, r1 + 1]], dtype=np.float64
        )
        pts = corners @ Minv[i, :, :2].T + Minv[i, :, 2]
        x0 = max(0, int(math.floor(pts[:, 0].min())))
        y0 = max(0, int(math.floor(pts[:, 1].min())))
        x1 = min(width - 1, int(math.ceil(pts[:, 0].max())))
        y1 = min(height - 1, int(math.ceil(pts[:, 1].max())))
        if x0 > x1 or y0 > y1:
            status[i] = SKIPPED
            continue
        roi[i] = (x0, y0, x1, y1)
        levels[i] = pyramid_levels(y1 - y0 + 1, x1 - x0 + 1, settings.levels) if settings.laplacian else 1
    return Plan(M=M64, Minv=Minv, roi=roi, status=status, mask_of=mask_of, levels=levels, frame_index=fidx)
