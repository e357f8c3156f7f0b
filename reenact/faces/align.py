"""Five-point face alignment: similarity transforms, batched crops and the inverse warp.

Conventions (all functions here):
    * Points are (x, y) pixel coordinates with **pixel centres at integer coordinates**:
      pixel (i, j) of an image covers [j-0.5, j+0.5] x [i-0.5, i+0.5] and its centre is
      (x=j, y=i). This is OpenCV's ``warpAffine`` convention and torch's and kornia's
      ``align_corners=True``; the ArcFace template is defined in it.
    * An affine matrix ``M`` [F,2,3] maps SOURCE (frame) pixels to CROP pixels:
      ``crop_xy = M[:, :, :2] @ frame_xy + M[:, :, 2]``. :func:`warp_to_crop` samples the
      crop through ``M``; :func:`warp_from_crop` pastes a crop back into the frame through
      the same ``M`` (it inverts it internally), so one matrix serves both directions.
    * Crops are float [F,3,S,S] RGB in [-1, 1]; frames uint8 [T,H,W,3] RGB.
All work is batched and runs on the device of the tensors given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reenact.errors import ShapeError
from reenact.shapes import check_shape

_INTEGERS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

# ArcFace (insightface) 112x112 template: left eye, right eye, nose, left mouth, right mouth.
_ARCFACE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

# Mean five-point positions of FFHQ-aligned faces (the StyleGAN training crops), as a
# fraction of the crop side: eye centres, nose tip, mouth corners. FFHQ's alignment puts
# the eye midpoint slightly above the centre and the eye-to-eye distance at about a
# quarter of the crop; these are the dataset means at 512 px divided by 512.
_FFHQ_UNIT = (
    (192.98138 / 512, 239.94708 / 512),
    (318.90277 / 512, 240.19360 / 512),
    (256.63416 / 512, 314.01935 / 512),
    (201.26117 / 512, 371.41043 / 512),
    (313.08905 / 512, 371.15118 / 512),
)


def arcface_template(size: int = 112, device: torch.device | str | None = None) -> torch.Tensor:
    """The ArcFace five-point template for a ``size`` x ``size`` crop.

    Conventions:
        returns float32 [5,2] crop pixels (x, y), pixel centres at integer coordinates.
        For ``size`` != 112 the 112 template is scaled by ``size / 112``.
    """
    if size < 8:
        raise ShapeError(f"template size must be >= 8 pixels, got {size}")
    t = torch.tensor(_ARCFACE_112, dtype=torch.float32, device=device)
    return t * (size / 112.0)


def ffhq_template(size: int = 1024, device: torch.device | str | None = None) -> torch.Tensor:
    """Five-point template of an FFHQ-style crop (as fed to the StyleGAN FFHQ generator).

    Conventions:
        returns float32 [5,2] crop pixels (x, y) for a ``size`` x ``size`` crop, pixel
        centres at integer coordinates.
    """
    if size < 8:
        raise ShapeError(f"template size must be >= 8 pixels, got {size}")
    unit = torch.tensor(_FFHQ_UNIT, dtype=torch.float32, device=device)
    # unit coordinates cover the crop edge to edge: edge 0 -> -0.5, edge 1 -> size - 0.5
    return unit * size - 0.5


def _check_affine(M: torch.Tensor) -> dict[str, int]:
    return check_shape(M, ["F", 2, 3], "M (affine matrices)", dtype="float")


def similarity_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms (rotation, uniform scale, translation).

    Finds, for each face, the similarity that maps its points ``src`` closest (in the
    least-squares sense) to the template ``dst`` (Umeyama's closed form, no reflection).

    Conventions:
        src float [F,5,2] frame pixels; dst float [5,2] crop pixels (a template)
        returns M float32 [F,2,3] mapping frame pixels -> crop pixels, on src's device
    """
    check_shape(src, ["F", 5, 2], "src", dtype="float")
    check_shape(dst, [5, 2], "dst", what="(a template)")
    if not torch.isfinite(src).all():
        raise ShapeError("src points contain NaN or infinity")
    s = src.to(torch.float64)
    d = dst.to(device=src.device, dtype=torch.float64).expand_as(s)
    mu_s = s.mean(dim=1, keepdim=True)
    mu_d = d.mean(dim=1, keepdim=True)
    sc = s - mu_s
    dc = d - mu_d
    var_s = (sc**2).sum(dim=(1, 2)) / s.shape[1]
    cov = dc.transpose(1, 2) @ sc / s.shape[1]  # [F,2,2]
    U, S, Vh = torch.linalg.svd(cov)
    det = torch.det(U) * torch.det(Vh)
    sign = torch.ones_like(S)
    sign[:, 1] = torch.where(det < 0, -1.0, 1.0)
    R = U @ torch.diag_embed(sign) @ Vh
    scale = (S * sign).sum(dim=1) / var_s.clamp_min(1e-12)
    A = scale[:, None, None] * R
    t = mu_d.squeeze(1) - (A @ mu_s.transpose(1, 2)).squeeze(2)
    M = torch.cat([A, t[:, :, None]], dim=2)
    return M.to(torch.float32)


def invert_affine(M: torch.Tensor) -> torch.Tensor:
    """Invert affine matrices.

    Conventions:
        M float [F,2,3] (e.g. frame -> crop); returns float [F,2,3] (crop -> frame)
    """
    _check_affine(M)
    A = M[:, :, :2].to(torch.float64)
    t = M[:, :, 2:].to(torch.float64)
    det = torch.det(A)
    if (det.abs() < 1e-12).any():
        raise ShapeError("an affine matrix is singular (zero scale) and cannot be inverted")
    Ai = torch.linalg.inv(A)
    return torch.cat([Ai, -Ai @ t], dim=2).to(M.dtype)


def warp_affine(images: torch.Tensor, M: torch.Tensor, size: tuple[int, int], padding_mode: str = "zeros"
                ) -> torch.Tensor:
    """Sample images through affine matrices: ``out[b, :, y, x] = images[b, :, M_b^-1 (x, y)]``,
    bilinear, pixel centres at integer coordinates; outside the image ``"zeros"`` or the
    nearest edge pixel (``"border"``).

    What ``kornia.geometry.transform.warp_affine(images, M, size, mode="bilinear",
    padding_mode=..., align_corners=True)`` computes (``tests/faces/test_faces_align.py``
    compares them), on torch's ``affine_grid`` and ``grid_sample`` alone: importing kornia
    cost 0.18-0.23 s at the start of every run for this one function. Like kornia, a side
    of one pixel is normalised with a denominator of 1e-14 instead of 0.

    Conventions:
        images float [B,C,H,W]; M float [B,2,3] image pixels -> output pixels; size
        (height, width) of the output; returns float [B,C,height,width], differentiable
    """
    check_shape(images, ["F", "C", "H", "W"], "images", dims=_check_affine(M))
    if padding_mode not in ("zeros", "border"):
        raise ShapeError(f"padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
    height, width = int(size[0]), int(size[1])
    src_h, src_w = images.shape[-2:]

    def to_normalised(h: int, w: int) -> torch.Tensor:  # pixels -> [-1, 1] (align_corners=True)
        n = torch.eye(3, dtype=torch.float64, device=M.device)
        n[0, 0], n[1, 1] = 2.0 / max(w - 1.0, 1e-14), 2.0 / max(h - 1.0, 1e-14)
        n[0, 2] = n[1, 2] = -1.0
        return n

    out_to_src = torch.cat([invert_affine(M.to(torch.float64)),
                            M.new_tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(M.shape[0], 1, 3)], dim=1)
    theta = to_normalised(src_h, src_w) @ out_to_src @ torch.linalg.inv(to_normalised(height, width))
    grid = F.affine_grid(theta[:, :2].to(images.dtype), [images.shape[0], images.shape[1], height, width],
                         align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def transform_points(points: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply affine matrices to points.

    Conventions:
        points float [F,K,2] (x, y); M float [F,2,3]; returns float [F,K,2]
    """
    check_shape(points, ["F", "K", 2], "points", dims=_check_affine(M))
    M = M.to(points.dtype)
    return points @ M[:, :, :2].transpose(1, 2) + M[:, None, :, 2]


def warp_to_crop(
    frames: torch.Tensor,
    frame_index: torch.Tensor,
    M: torch.Tensor,
    size: int,
    chunk: int = 16,
) -> torch.Tensor:
    """Cut aligned face crops out of frames (bilinear, zeros outside the frame).

    Conventions:
        frames uint8 [T,H,W,3] RGB; frame_index long [F] (which frame each face is in);
        M float [F,2,3] frame pixels -> crop pixels; returns float32 [F,3,size,size] in
        [-1, 1] on the frames' device. Faces are processed ``chunk`` at a time so memory
        stays bounded for large frames.
    """
    check_shape(frames, ["T", "H", "W", 3], "frames", dtype=torch.uint8)
    dims = _check_affine(M)
    frame_index = torch.as_tensor(frame_index, device=frames.device)
    check_shape(frame_index, ["F"], "frame_index", dtype=_INTEGERS, dims=dims)
    if size < 8:
        raise ShapeError(f"crop size must be >= 8, got {size}")
    n = M.shape[0]
    if n and (int(frame_index.min()) < 0 or int(frame_index.max()) >= frames.shape[0]):
        raise ShapeError(f"frame_index out of range for {frames.shape[0]} frames: {frame_index.tolist()}")
    out = torch.empty((n, 3, size, size), dtype=torch.float32, device=frames.device)
    M = M.to(device=frames.device, dtype=torch.float32)
    regions, offsets = _source_regions(M, size, frames.shape[1], frames.shape[2])
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = frame_index[start:stop].long()
        # only the part of each frame that the crop sees is converted to float
        rh = int((regions[start:stop, 3] - regions[start:stop, 1]).max())
        rw = int((regions[start:stop, 2] - regions[start:stop, 0]).max())
        src = torch.zeros((stop - start, rh, rw, 3), dtype=torch.uint8, device=frames.device)
        for j in range(stop - start):
            x0, y0, x1, y1 = (int(v) for v in regions[start + j])
            src[j, : y1 - y0, : x1 - x0] = frames[idx[j], y0:y1, x0:x1]
        shifted = M[start:stop].clone()
        shifted[:, :, 2] += (shifted[:, :, :2] @ offsets[start:stop, :, None]).squeeze(2)
        crop = warp_affine(src.permute(0, 3, 1, 2).float(), shifted, (size, size))
        out[start:stop] = crop / 127.5 - 1.0
    return out


def _source_regions(M: torch.Tensor, size: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-pixel boxes [F,4] (x0,y0,x1,y1, clipped) each crop samples from, and their offsets [F,2]."""
    corners = torch.tensor([[0.0, 0.0], [size - 1.0, 0.0], [0.0, size - 1.0], [size - 1.0, size - 1.0]],
                           device=M.device).expand(M.shape[0], 4, 2)
    src = transform_points(corners, invert_affine(M))
    lo = torch.floor(src.min(dim=1).values) - 1
    hi = torch.ceil(src.max(dim=1).values) + 2
    x0 = lo[:, 0].clamp(0, width - 1)
    y0 = lo[:, 1].clamp(0, height - 1)
    x1 = torch.maximum(hi[:, 0].clamp(1, width), x0 + 1)
    y1 = torch.maximum(hi[:, 1].clamp(1, height), y0 + 1)
    regions = torch.stack([x0, y0, x1, y1], dim=1).long().cpu()
    return regions, torch.stack([x0, y0], dim=1)


def warp_from_crop(
    crops: torch.Tensor, M: torch.Tensor, frame_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp crops back into frame geometry (the inverse of :func:`warp_to_crop`).

    Conventions:
        crops float [F,C,S,S]; M float [F,2,3] frame pixels -> crop pixels (the same
        matrix given to :func:`warp_to_crop`); frame_size (H, W).
        returns (images float [F,C,H,W], coverage float [F,1,H,W] in [0,1], 1 where the
        frame pixel maps inside the crop), on the crops' device.
    """
    check_shape(crops, ["F", "C", "S", "S"], "crops", dtype="float", dims=_check_affine(M))
    h, w = int(frame_size[0]), int(frame_size[1])
    Minv = invert_affine(M.to(device=crops.device, dtype=torch.float32))
    images = warp_affine(crops, Minv, (h, w))
    ones = torch.ones_like(crops[:, :1])
    coverage = warp_affine(ones, Minv, (h, w))
    return images, coverage


def align_faces(
    frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor, template: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity-align faces to ``template`` and crop them.

    Conventions:
        frames uint8 [T,H,W,3]; frame_index long [F]; points float [F,5,2] frame pixels;
        template float [5,2] crop pixels. Returns (crops float32 [F,3,size,size] in
        [-1,1], M float32 [F,2,3] frame -> crop).
    """
    M = similarity_from_points(points.to(frames.device), template)
    return warp_to_crop(frames, frame_index, M, size), M


__all__ = [
    "align_faces",
    "arcface_template",
    "ffhq_template",
    "invert_affine",
    "similarity_from_points",
    "transform_points",
    "warp_from_crop",
    "warp_to_crop",
]
