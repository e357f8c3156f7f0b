"""Soft face masks in crop coordinates, from the aligned template or a face's 5 points.

The face region is an ellipse fitted to the 5 points (eyes, nose, mouth corners): its long
axis runs from the eyes' midpoint towards the mouth, it reaches from the hairline to the
chin and from cheek to cheek. The mask is 1 deep inside, falls to 0 over ``feather`` (a
smoothstep of the signed distance to the outline moved inwards by ``erosion``), is
optionally blurred, and always fades to 0 before the crop border so that nothing of the
crop's edge can show in the frame.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from reenact.blend.common import BlendSettings
from reenact.errors import ConfigError, ShapeError
from reenact.shapes import check_shape

# FFHQ-style aligned crop: the 5 points (left eye, right eye, nose, left and right mouth
# corner, in image left-to-right order) in a 512 x 512 crop, as used by common FFHQ
# alignment; scaled linearly for other sizes.
_FFHQ_512 = (
    (192.98, 239.95),
    (318.90, 240.19),
    (256.63, 314.02),
    (201.26, 371.41),
    (313.09, 371.15),
)


def default_template(size: int) -> torch.Tensor:
    """The 5-point template of the generator's aligned crop of ``size`` pixels.

    Uses ``reenact.faces.align.ffhq_template`` when that module provides it (so masks and
    alignment agree), else the FFHQ 512 template scaled to ``size``.

    Conventions: returns float32 ``[5,2]`` pixel (x, y) in the crop.
    """
    maker: Any = None
    try:
        from reenact.faces import align

        maker = getattr(align, "ffhq_template", None)
    except ImportError:  # the faces package is optional here: fall back to our own template
        pass
    if maker is not None:
        pts = torch.as_tensor(maker(size), dtype=torch.float32).cpu()
        if pts.shape == (5, 2):
            return pts
    return torch.tensor(_FFHQ_512, dtype=torch.float32) * (size / 512.0)


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ramp(depth: torch.Tensor, width: float) -> torch.Tensor:
    if width <= 0.0:
        return (depth > 0).to(depth.dtype)
    return _smoothstep(depth / width)


def _gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    m = mask[:, None]
    m = torch.nn.functional.conv2d(m, kernel.view(1, 1, 1, -1), padding=(0, radius))
    m = torch.nn.functional.conv2d(m, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return m[:, 0]


def face_mask(size: int, settings: BlendSettings = BlendSettings(), points: torch.Tensor | None = None) -> torch.Tensor:
    """Soft face mask of a ``size x size`` aligned crop.

    ``points`` are the face's 5 points in the crop (``[5,2]``, or ``[F,5,2]`` for one mask
    per face); ``None`` uses the aligned template (:func:`default_template`), which is
    where every aligned face's points land.

    Conventions: points pixel (x, y) of the crop, order left eye, right eye, nose, left
    mouth corner, right mouth corner (image left to right). Returns float32 ``[R,R]``
    (or ``[F,R,R]``) in [0,1], on the points' device (CPU without points).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ShapeError(f"mask size must be an integer >= 2, got {size!r}")
    if points is None:
        pts = default_template(size)[None]
        single = True
    else:
        if not isinstance(points, torch.Tensor):
            points = torch.as_tensor(points)
        single = points.dim() == 2
        check_shape(points, [5, 2] if single else ["F", 5, 2], "points", what="pixel (x, y), or [F,5,2]")
        pts = points[None] if single else points
        pts = pts.to(torch.float32)
        if not torch.isfinite(pts).all():
            raise ShapeError("points contain NaN or inf; cannot build a face mask from them")
    device = pts.device
    pts = pts.to(torch.float64)
    eyes = 0.5 * (pts[:, 0] + pts[:, 1])
    mouth = 0.5 * (pts[:, 3] + pts[:, 4])
    down = mouth - eyes
    length = down.norm(dim=1)
    eye_dist = (pts[:, 1] - pts[:, 0]).norm(dim=1)
    if bool((length < 1e-3).any()) or bool((eye_dist < 1e-3).any()):
        raise ShapeError("points are degenerate (eyes or mouth coincide); cannot fit a face outline")
    axis_y = down / length[:, None]
    axis_x = torch.stack([axis_y[:, 1], -axis_y[:, 0]], dim=1)
    centre = eyes + 0.4 * down
    semi_y = 1.22 * length * settings.mask_scale
    semi_x = 1.05 * eye_dist * settings.mask_scale

    coords = torch.arange(size, dtype=torch.float64, device=device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - centre[:, 0, None, None]
    dy = yy[None] - centre[:, 1, None, None]
    px = (dx * axis_x[:, 0, None, None] + dy * axis_x[:, 1, None, None]) / semi_x[:, None, None]
    py = (dx * axis_y[:, 0, None, None] + dy * axis_y[:, 1, None, None]) / semi_y[:, None, None]
    r = torch.sqrt(px * px + py * py)
    # First-order signed distance to the ellipse (positive outside), in pixels.
    gx = px / semi_x[:, None, None]
    gy = py / semi_y[:, None, None]
    grad = torch.sqrt(gx * gx + gy * gy) / r.clamp_min(1e-12)
    inner = torch.minimum(semi_x, semi_y)[:, None, None].expand_as(r)
    dist = torch.where(r > 1e-9, (r - 1.0) / grad.clamp_min(1e-12), -inner)

    erosion = settings.erosion * size
    feather = settings.feather * size
    mask = _ramp(-dist - erosion, feather)
    if settings.blur > 0.0:
        mask = _gaussian_blur(mask, settings.blur * size)
        mask = torch.where(mask < 1.0 / 1024.0, torch.zeros_like(mask), mask)
    # Fade out before the crop border, whatever the outline does.
    edge = torch.minimum(torch.minimum(xx, yy), torch.minimum(size - 1 - xx, size - 1 - yy))
    mask = mask * _ramp(edge, max(feather, 2.0))[None]
    mask = mask.clamp(0.0, 1.0).to(torch.float32)
    return mask[0] if single else mask


def grown_mask_settings(settings: BlendSettings, factor: float) -> BlendSettings:
    """``settings`` with the face ellipse grown by ``factor`` (kept within ``mask_scale``'s
    range of [0.1, 3]): the pasted face then also replaces forehead and jaw line, which a
    recogniser with a loose crop would otherwise still see (the deidentify ladder's rung b).
    """
    if not factor >= 1.0:
        raise ConfigError(f"a grown mask needs factor >= 1, got {factor!r}")
    return dataclasses.replace(settings, mask_scale=min(3.0, settings.mask_scale * factor))
