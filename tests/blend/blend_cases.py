"""Synthetic inputs for the blend tests: frames, smooth faces, similarity transforms."""

from __future__ import annotations

import math

import torch

from reenact.blend import BlendSettings


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


SETTINGS = [
    BlendSettings(),
    BlendSettings(colour_match="histogram", colour_space="lab", histogram_bins=32),
    BlendSettings(colour_match="stats", colour_space="lab", laplacian=True, levels=3),
    BlendSettings(colour_match="none", erosion=0.0, feather=0.1, blur=0.02),
    BlendSettings(colour_match="histogram", colour_space="ycbcr", laplacian=True, levels=4),
    BlendSettings(colour_match="stats", colour_space="rgb", max_gain=1.5),
]


def random_case(seed: int, size: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 frames 96x128; faces inside, overlapping (same frame) and across every border."""
    g = torch.Generator().manual_seed(seed)
    h, w = 96, 128
    frames = textured_frames(3, h, w, g)
    placements = [
        (0, 36.0, 0.1, 40.0, 50.0),  # inside
        (0, 40.0, -0.4, 58.0, 46.0),  # overlaps the first, composited after it
        (1, 44.0, 0.6, 4.0, 48.0),  # across the left border
        (1, 30.0, 0.0, 120.0, 92.0),  # across the bottom-right corner
        (2, 50.0, math.pi, 64.0, 2.0),  # upside down, across the top border
        (2, 20.0, 0.3, 70.0, 60.0),
    ]
    jitter = torch.rand(len(placements), 3, generator=g)
    M = torch.stack(
        [
            placing(size, fw * (0.9 + 0.2 * float(j[0])), ang + 0.2 * float(j[1]), cx + 3 * float(j[2]), cy)
            for (_, fw, ang, cx, cy), j in zip(placements, jitter, strict=True)
        ]
    )
    frame_index = torch.tensor([p[0] for p in placements], dtype=torch.int64)
    faces = smooth_faces(len(placements), size, g)
    return frames, faces, frame_index, M
