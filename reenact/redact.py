"""Fail-closed redaction: faces that could not be replaced are blurred, never left as they were.

Conventions: frames uint8 ``[H,W,3]`` RGB; boxes float ``[N,4]`` (x1, y1, x2, y2) frame pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reenact.errors import ShapeError


def blur_boxes(frame: torch.Tensor, boxes: torch.Tensor, margin: float = 0.25, cells: int = 8) -> torch.Tensor:
    """Return ``frame`` with each box (grown by ``margin`` of its size) made unrecognisable.

    The region is pixelated to at most ``cells`` x ``cells`` blocks of at least 6 px (so small
    faces get fewer, coarser blocks) and then blurred, which removes the detail face
    recognisers need while keeping the scene's colours. Boxes are clipped to the frame; the
    input tensor is not modified.
    """
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ShapeError(f"frame must be uint8 [H,W,3], got {frame.dtype} {tuple(frame.shape)}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = frame.clone()
    h, w = frame.shape[:2]
    for x1, y1, x2, y2 in boxes.tolist():
        gx, gy = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - gx)), max(0, int(y1 - gy))
        right, bottom = min(w, int(x2 + gx) + 1), min(h, int(y2 + gy) + 1)
        if right - left < 2 or bottom - top < 2:
            continue
        region = out[top:bottom, left:right].permute(2, 0, 1)[None].float()
        n = max(1, min(cells, min(bottom - top, right - left) // 6))
        small = F.adaptive_avg_pool2d(region, (n, n))
        coarse = F.interpolate(small, size=region.shape[-2:], mode="bilinear", align_corners=False)
        out[top:bottom, left:right] = coarse[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    return out
