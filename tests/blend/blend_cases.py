"""Synthetic inputs for the blend tests: frames, smooth faces, similarity transforms."""

from __future__ import annotations

import math

import torch


def similarity(scale: float, angle: float, tx: float, ty: float) -> torch.Tensor:
    """A [2,3] frame->crop similarity: crop = scale * R(angle) @ frame + (tx, ty)."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32)


def placing(crop_size: int, face_px: float, angle: float, cx: float, cy: float) -> torch.Tensor:
    """M that puts a crop of ``crop_size`` as a ``face_px`` wide square centred at (cx, cy)."""
    scale = crop_size / face_px
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    centre = (crop_size - 1) / 2.0
    tx = centre - (c * cx - s * cy)
    ty = centre - (s * cx + c * cy)
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32)


def smooth_faces(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random smooth faces [n,3,size,size] in [-1,1] (low-frequency noise plus a tint)."""
    base = torch.rand(n, 3, 6, 6, generator=generator) * 2.0 - 1.0
    faces = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    detail = (torch.rand(n, 3, size, size, generator=generator) - 0.5) * 0.2
    return (faces + detail).clamp(-1.0, 1.0)


def textured_frames(t: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 [t,h,w,3] frames with smooth structure and pixel noise."""
    base = torch.rand(t, 3, 8, 8, generator=generator) * 255.0
    smooth = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    noise = torch.randint(-20, 21, (t, 3, h, w), generator=generator)
    return (smooth + noise).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
