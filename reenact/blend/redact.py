"""Face-shaped redaction: blur, pixelate or fill the head's ellipse, not a rectangle around it.

A face's **region** is an ellipse in frame pixels that covers what carries identity: forehead
to chin, cheek to ear, up to the hairline. It comes from the five points (the eye line gives
its tilt, the eye-to-mouth distance its height, the eye distance its width) and the
detector's box (:func:`face_regions`): a face in profile has its eyes close together and to
one side of the head; the box still says how wide the head is and where. Its bounding box is the **head box**: the widest thing any
redaction here touches, so no method reaches past the head.

Redactions (:func:`redact_faces_`):

* ``blur``: a Gaussian blur whose sigma is :data:`BLUR_SIGMA` of the region's **strength
  width** (:func:`strength_width`): the region's width, but at least :data:`SMALL_FACE` px.
  Above that the face keeps the same (too few) resolvable cells at any size. Below it a
  blur that only scales with the face is not enough: a recogniser enlarges a small face into
  its 112-150 px chip, so the original it compares with is itself soft and what it uses
  (the coarse layout of a dim, compressed face) survives a blur of 0.2 of the face's width.
  So a small face is blurred as far, in pixels, as a :data:`SMALL_FACE`-wide one (sigma
  0.2 x 192 = 38.4 px: 0.48 of an 80 px face's width). Computed on the region downscaled to
  :data:`BLUR_WORK_SIGMA` px per sigma and enlarged again (cost per face independent of its
  size: a crowd of faces stays cheap).
* ``pixelate``: blocks of 1/:data:`PIXELATE_CELLS` of the region's strength width (a small
  face gets fewer, larger blocks), aligned to the head box.
* ``solid``: the region filled with a flat colour (:data:`SOLID_LEVEL`), with a thin edge
  (:data:`SOLID_FEATHER`).
* ``flat``: the region filled with its own mean colour (the face gone, the light kept: what
  the privacy check's same-context baseline embeds), taken from ``source`` where given.

``shape="ellipse"`` applies them inside the region with a feathered edge (the mask is 1 on
the whole ellipse and falls to 0 over :data:`FEATHER`, for ``solid`` :data:`SOLID_FEATHER`,
of its minor semi-axis outside it);
``shape="box"`` applies them to the whole head box (the ladder's rungs after the face-shaped fill).

Conventions: frames uint8 ``[H,W,3]`` RGB; boxes float ``[N,4]`` (x1, y1, x2, y2) and points
float ``[N,5,2]`` (x, y) frame pixels, ArcFace order (left eye, right eye, nose, left and
right mouth corner as seen in the image); regions float32 ``[N,5]`` (centre x, centre y,
semi-axis across, semi-axis along the face, tilt in radians: the angle of the eye line).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from reenact.errors import ShapeError
from reenact.shapes import check_shape

Method = Literal["blur", "pixelate", "solid", "flat"]
Shape = Literal["ellipse", "box"]
METHODS: tuple[str, ...] = ("blur", "pixelate", "solid", "flat")
SHAPES: tuple[str, ...] = ("ellipse", "box")

#: The region from the five points, in units of the eye-to-mouth distance ``L`` (along the
#: face) and the eye distance ``D`` (across): the centre sits ``CENTRE_DOWN * L`` below the eyes'
#: midpoint, the ellipse reaches ``SEMI_ALONG * L`` up and down (about 1.3 L above the eyes to
#: the hairline, 0.9 L below the mouth to the chin) and ``SEMI_ACROSS * D`` to either side (the ears).
CENTRE_DOWN = 0.3
SEMI_ALONG = 1.65
SEMI_ACROSS = 1.3
#: a head is at least this wide for its height (a face turned to profile keeps its head width)
MIN_ASPECT = 0.78
#: the region from the detector's box (x1, y1, x2, y2: about brow to chin, cheek to cheek):
#: semi-axes at least these shares of the box's width and height
BOX_SEMI_ACROSS = 0.62
BOX_SEMI_ALONG = 0.72
#: the points belong to the box's face when the box ellipse's centre lies within this share of
#: the points ellipse (1: on its edge); beyond it one of the two is wrong and the box is kept
CONSISTENT = 0.5

#: blur sigma as a share of the region's width (2 x the semi-axis across). On the 720p fixture
#: clip's dim ~90 px faces (22 faces of 4 frames) dlib's tight chip still saw 4 blurred faces
#: above the check's limit at 0.09, none at 0.12 (``bench/calibrate_privacy.py``'s rule). On
#: the 1080p crowd (``bench/privacy.py --frames 4``, 31 faces) 0.2 against 0.12: MobileFace
#: links 4 blurred faces instead of 8 (its floor: 2), 1 of 59 face-frames ends solid instead
#: of 4, and the picture outside the faces keeps 38.6 dB instead of 32.2 (fewer head boxes)
BLUR_SIGMA = 0.2
#: a face whose region is narrower than this (px) is redacted as strongly, in pixels, as a
#: face this wide (:func:`strength_width`). Measured by ``bench/redact_size.py --no-photos
#: --clips friends crowd hamilton`` (the fixture MobileFace at 0.1 % false matches judging
#: each SCRFD face of 4 frames against its original, regions of this round's
#: :func:`face_regions`; the black head box is the floor), share linked per region width:
#: 80-112 px (19 faces): 0.26 at their own width, 0.05 with the strength of a 144 px face,
#: 0 from 176 px (floor 0.21); 112-144 px (7): 0.29 up to 176 px, 0 from 192 px (floor 0.14);
#: 48-80 px (17): 0.12 from 144 px on (floor 0.06: dlib's check sees those); faces from 144 px
#: on gain nothing from a larger width. Pixelation at 192: 0 of 26 faces of 80-144 px. The
#: labelled photos downscaled to 48-160 px regions link at no width with either rule (clean,
#: bright photos: what links in the clips is dim, compressed video), so the bound comes from
#: the clips.
SMALL_FACE = 192
#: the downscaled work image has this many pixels per sigma (3 sigma fit a 7-tap kernel)
BLUR_WORK_SIGMA = 2.0
#: pixelation: blocks per region width
PIXELATE_CELLS = 7
#: the feathered edge outside the ellipse, as a share of its smaller semi-axis
FEATHER = 0.15
#: the same for ``solid``: a black fill needs no blend into the picture, only an edge without
#: jagged steps. Its feather is what it blacks out around the face, so it stays thin: on the
#: 720p fixture clip (``--method solid``, 12 frames, black ovals on every face) the picture
#: outside the SCRFD boxes grown 1.5x kept 35.2 dB with FEATHER, 36.3 dB with 0.06 (deface's
#: blur: 36.3), while the fixture MobileFace linked 11 and 12 faces of 67, its black-head-box
#: floor 12 (its similarities on the black ovals match the black head boxes' within 0.01)
SOLID_FEATHER = 0.06
#: the flat colour of ``solid`` (each channel)
SOLID_LEVEL = 0


def feather_for(method: str) -> float:
    """The feathered edge of ``method``'s ellipse (share of its smaller semi-axis):
    :data:`SOLID_FEATHER` for ``solid``, else :data:`FEATHER`."""
    return SOLID_FEATHER if method == "solid" else FEATHER


def strength_width(width: float) -> float:
    """The width (px) a region's redaction strength is computed from: its own, at least
    :data:`SMALL_FACE` (module docstring)."""
    return max(float(width), float(SMALL_FACE))


def _spans(regions: torch.Tensor, tilt: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each ellipse's centre and half extents in a frame turned by ``tilt`` (u across the
    face, v along it): (cu, cv, half_u, half_v), each [N]."""
    cx, cy, a, b, phi = regions.unbind(1)
    c, s = torch.cos(tilt), torch.sin(tilt)
    d = phi - tilt
    half_u = torch.sqrt((a * torch.cos(d)) ** 2 + (b * torch.sin(d)) ** 2)
    half_v = torch.sqrt((a * torch.sin(d)) ** 2 + (b * torch.cos(d)) ** 2)
    return cx * c + cy * s, -cx * s + cy * c, half_u, half_v


def face_regions(boxes: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
    """The region ellipse of each face (module docstring): from its five points and its box.

    Two estimates of the head: the **box ellipse** (upright, from the detector's box) and the
    **points ellipse** (tilted with the eye line, sized from the eye-to-mouth and eye
    distances). Along the face the region is the points ellipse's, at least as long as the
    box ellipse (hairline to chin). Across it, the region spans the points ellipse (at least
    as wide as the box ellipse) and the box ellipse's own extent: on a frontal face the two
    agree; on a face turned away the eyes, nose and mouth sit to one side of the head, where
    a box-sized ellipse centred on them leaves the far cheek and the ear out, while the box
    still spans them.

    Faces whose points are missing (``points`` None), unusable (not finite, eyes or mouth on
    one spot) or inconsistent with the box (the box's centre outside the inner
    :data:`CONSISTENT` of the points ellipse: they are not this box's face) get the box
    ellipse alone. Consistency bounds the widening at a quarter of the region's width
    (CONSISTENT x the points ellipse's semi-axis): never far wider than the head.

    Conventions: boxes float [N,4], points float [N,5,2] frame pixels or None; returns float32
    [N,5] (cx, cy, semi_across, semi_along, tilt) on the boxes' device.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    check_shape(boxes, ["N", 4], "boxes", what="(x1, y1, x2, y2) frame pixels")
    n = boxes.shape[0]
    bw = (boxes[:, 2] - boxes[:, 0]).clamp_min(1.0)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp_min(1.0)
    # 1. from the box: upright, centred a little above its middle (the box stops at the brow)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - 0.08 * bh
    from_box = torch.stack([cx, cy, BOX_SEMI_ACROSS * bw, BOX_SEMI_ALONG * bh, torch.zeros(n, device=boxes.device)],
                           dim=1)
    if points is None:
        return from_box
    points = torch.as_tensor(points, dtype=torch.float32, device=boxes.device)
    check_shape(points, [n, 5, 2], "points", what="(x, y) frame pixels, ArcFace order")
    # 2. from the points: the eye line's tilt, the eye-to-mouth distance and the eye distance
    eyes = (points[:, 0] + points[:, 1]) / 2
    mouth = (points[:, 3] + points[:, 4]) / 2
    down = mouth - eyes
    length = down.norm(dim=1)
    eye_dist = (points[:, 1] - points[:, 0]).norm(dim=1)
    usable = torch.isfinite(points).flatten(1).all(dim=1) & (length >= 1.0) & (eye_dist >= 0.5)
    safe_len = torch.where(usable, length, torch.ones_like(length))
    safe_eyes = torch.where(usable[:, None], eyes, torch.zeros_like(eyes))
    safe_down = torch.where(usable[:, None], down, torch.stack([torch.zeros_like(length), safe_len], 1))
    tilt = torch.atan2(-safe_down[:, 0], safe_down[:, 1])  # 0 upright (mouth straight below the eyes)
    centre = safe_eyes + CENTRE_DOWN * safe_down
    along = SEMI_ALONG * safe_len
    across = torch.maximum(SEMI_ACROSS * torch.where(usable, eye_dist, safe_len), MIN_ASPECT * along)
    from_points = torch.stack([centre[:, 0], centre[:, 1], across, along, tilt], dim=1)
    # 3. consistent with the box: its centre well inside the points ellipse
    pu, pv, p_half_u, p_half_v = _spans(from_points, tilt)
    bu, bv, b_half_u, b_half_v = _spans(from_box, tilt)
    inside = ((bu - pu) / p_half_u) ** 2 + ((bv - pv) / p_half_v) ** 2 <= CONSISTENT**2
    usable = usable & inside
    # 4. along the face: the points' centre, at least the box's size (hairline to chin, as before);
    # across it: the same, widened to the box ellipse's own extent (the far cheek and ear)
    half_v = torch.maximum(p_half_v, b_half_v)
    half_u = torch.maximum(p_half_u, b_half_u)
    lo_u, hi_u = torch.minimum(pu - half_u, bu - b_half_u), torch.maximum(pu + half_u, bu + b_half_u)
    mid_u = (lo_u + hi_u) / 2
    c, s = torch.cos(tilt), torch.sin(tilt)
    union = torch.stack([mid_u * c - pv * s, mid_u * s + pv * c, (hi_u - lo_u) / 2, half_v, tilt], dim=1)
    return torch.where(usable[:, None], union, from_box)


def head_boxes(regions: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Each region's bounding box (the head box), clipped to a ``width`` x ``height`` frame.

    Conventions: regions float [N,5]; returns long [N,4] (left, top, right, bottom), right and
    bottom exclusive; empty where the region lies outside the frame (right <= left).
    """
    check_shape(regions, ["N", 5], "regions", what="(cx, cy, semi_across, semi_along, tilt)")
    cx, cy, a, b, t = regions.float().unbind(1)
    c, s = torch.cos(t), torch.sin(t)
    half_w = torch.sqrt((a * c) ** 2 + (b * s) ** 2)
    half_h = torch.sqrt((a * s) ** 2 + (b * c) ** 2)
    left = torch.floor(cx - half_w).clamp(0, width)
    top = torch.floor(cy - half_h).clamp(0, height)
    right = torch.ceil(cx + half_w + 1).clamp(0, width)
    bottom = torch.ceil(cy + half_h + 1).clamp(0, height)
    return torch.stack([left, top, torch.maximum(left, right), torch.maximum(top, bottom)], dim=1).long()


def region_mask(region: torch.Tensor, left: int, top: int, h: int, w: int, feather: float = FEATHER,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The soft mask of one region over the window (left, top, w, h) of its frame: 1 on the
    ellipse, falling to 0 over ``feather`` x its smaller semi-axis outside it (smoothstep).

    Conventions: region float [5]; returns float32 [h,w] in [0,1].
    """
    cx, cy, a, b, t = (float(v) for v in region)
    ys = torch.arange(top, top + h, dtype=torch.float32, device=device)[:, None] - cy
    xs = torch.arange(left, left + w, dtype=torch.float32, device=device)[None, :] - cx
    c, s = math.cos(t), math.sin(t)
    u = (xs * c + ys * s) / max(a, 1e-3)  # across the face
    v = (-xs * s + ys * c) / max(b, 1e-3)  # along the face
    r = torch.sqrt(u * u + v * v)
    # distance outside the ellipse, roughly in pixels (first order), against the feather width
    ramp = max(feather * min(a, b), 1e-3)
    outside = (r - 1.0).clamp_min(0.0) * min(a, b) / ramp
    t_ = (1.0 - outside).clamp(0.0, 1.0)
    return t_ * t_ * (3.0 - 2.0 * t_)


def _gaussian_taps(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur_patch(patch: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of ``sigma`` px of ``patch``, computed at a scale where sigma is
    :data:`BLUR_WORK_SIGMA` px (area-downscaled, blurred with reflected borders, enlarged
    bilinearly): the cost does not grow with the face.

    Conventions: patch float [3,h,w] (0..255); returns float [3,h,w].
    """
    check_shape(patch, [3, None, None], "patch", dtype="float")
    h, w = patch.shape[1:]
    scale = min(1.0, BLUR_WORK_SIGMA / max(sigma, 1e-3))
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(patch[None], size=(sh, sw), mode="area") if (sh, sw) != (h, w) else patch[None]
    s_small = sigma * min(sh / h, sw / w)
    taps = _gaussian_taps(s_small, patch.device)
    r = taps.numel() // 2
    x = small.reshape(3, 1, sh, sw)
    # reflect needs the pad below the size; replicate beyond that (tiny regions)
    mode = "reflect" if r < min(sh, sw) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), taps.view(1, 1, -1, 1))
    big = F.interpolate(x.reshape(1, 3, sh, sw), size=(h, w), mode="bilinear", align_corners=False)
    return big[0]


def pixelate_patch(patch: torch.Tensor, block: float) -> torch.Tensor:
    """``patch`` in square blocks of about ``block`` px (block averages, hard edges).

    Conventions: patch float [3,h,w]; returns float [3,h,w].
    """
    check_shape(patch, [3, None, None], "patch", dtype="float")
    h, w = patch.shape[1:]
    nh, nw = max(1, round(h / max(block, 1.0))), max(1, round(w / max(block, 1.0)))
    small = F.adaptive_avg_pool2d(patch[None], (nh, nw))
    return F.interpolate(small, size=(h, w), mode="nearest")[0]


def _check_frame(frame: torch.Tensor) -> None:
    if not isinstance(frame, torch.Tensor) or frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ShapeError(f"frame must be uint8 [H,W,3], got {getattr(frame, 'dtype', type(frame))} "
                         f"{tuple(getattr(frame, 'shape', ()))}")


def redact_faces_(frame: torch.Tensor, regions: torch.Tensor, method: str, shape: str = "ellipse",
                  source: torch.Tensor | None = None) -> None:
    """Redact each region of ``frame`` in place (module docstring); only the pixels of each
    region's window (its head box, plus the feather for ``ellipse``) are read and written.
    ``source``: the frame ``flat`` takes each region's mean colour from (default ``frame``
    itself; the privacy ladder passes the original, so its fill is the same-context baseline
    whatever was pasted on the face before).

    Conventions: frame uint8 [H,W,3]; regions float [N,5] (from :func:`face_regions`); source
    uint8 [H,W,3] or None.
    """
    _check_frame(frame)
    if source is not None:
        _check_frame(source)
        if source.shape != frame.shape:
            raise ShapeError(f"source {tuple(source.shape)} must match frame {tuple(frame.shape)}")
    check_shape(regions, ["N", 5], "regions", what="(cx, cy, semi_across, semi_along, tilt)")
    if method not in METHODS:
        raise ShapeError(f"unknown redaction {method!r}; use one of {', '.join(METHODS)}")
    if shape not in SHAPES:
        raise ShapeError(f"unknown redaction shape {shape!r}; use one of {', '.join(SHAPES)}")
    height, width = frame.shape[:2]
    grow = 1.0 + (feather_for(method) if shape == "ellipse" else 0.0)
    regions = regions.float().cpu()
    grown = regions.clone()
    grown[:, 2:4] *= grow
    windows = head_boxes(grown, width, height).tolist()
    for region, (left, top, right, bottom) in zip(regions, windows, strict=True):
        if right - left < 1 or bottom - top < 1:
            continue
        _redact_window_(frame, region, (left, top, right, bottom), method, shape, source)


def _redact_window_(frame: torch.Tensor, region: torch.Tensor, window: tuple[int, int, int, int],
                    method: str, shape: str, source: torch.Tensor | None = None) -> None:
    left, top, right, bottom = window
    view = frame[top:bottom, left:right]
    face_width = strength_width(2.0 * float(region[2]))
    # 1. where it goes: the whole window (box) or the feathered ellipse
    patch = view.permute(2, 0, 1).float()
    mask = None if shape == "box" else region_mask(region, left, top, bottom - top, right - left,
                                                   feather_for(method), device=frame.device)
    # 2. the redacted window
    if method == "blur":
        redacted = blur_patch(patch, BLUR_SIGMA * face_width)
    elif method == "pixelate":
        redacted = pixelate_patch(patch, face_width / PIXELATE_CELLS)
    elif method == "flat":
        weights = torch.ones_like(patch[0]) if mask is None else mask
        colours = patch if source is None else source[top:bottom, left:right].permute(2, 0, 1).float()
        mean = (colours * weights).sum(dim=(1, 2)) / weights.sum().clamp_min(1e-6)
        redacted = mean[:, None, None].expand_as(patch).clone()
    else:
        redacted = torch.full_like(patch, float(SOLID_LEVEL))
    out = redacted if mask is None else patch + (redacted - patch) * mask[None]
    view.copy_(out.round_().clamp_(0, 255).permute(1, 2, 0))


def redact_faces(frame: torch.Tensor, regions: torch.Tensor, method: str, shape: str = "ellipse") -> torch.Tensor:
    """:func:`redact_faces_` on a copy: the input frame is not modified.

    Conventions: frame uint8 [H,W,3]; regions float [N,5]; returns uint8 [H,W,3].
    """
    _check_frame(frame)
    out = frame.clone()
    redact_faces_(out, regions, method, shape)
    return out
