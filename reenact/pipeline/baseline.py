"""The privacy check's same-context baseline: each face's original frame with the face gone.

The check compares an output face with its own original in the same frame, where hair, ears,
jaw line, background and light are shared: even a face that is gone scores high there. So
for each face the check also embeds its original frame with the face-shaped region
(:func:`reenact.blend.redact.face_regions`) filled with the region's mean colour (``flat``:
the face gone, the light kept), and judges the output face against that baseline
(:meth:`reenact.faces.privacy_thresholds.OperatingPoint.private`).

Only a window around each face is copied (the face box grown by :data:`WINDOW` of its size on
each side, enough for the loosest chip), so a crowd of faces in a 4K frame costs a few small
copies, never a frame per face.

Conventions: frames uint8 [T,H,W,3] RGB; frame index long [F]; boxes float [F,4] and points
float [F,5,2] frame pixels; returns windows uint8 [F,h,w,3] and points float [F,5,2] in
window pixels.
"""

from __future__ import annotations

import torch

from reenact.blend.redact import face_regions, redact_faces_
from reenact.shapes import check_shape

#: the window around a face, in face-box sizes on each side: the loose chips reach about 1.2
WINDOW = 1.5


def flat_windows(frames: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A window of each face's frame around it with the face's region filled flat, and the
    face's points in that window (module docstring). Pixels outside the frame are 0, as the
    chip warps see them in the frame itself."""
    dims = check_shape(frames, ["T", "H", "W", 3], "frames", dtype=torch.uint8)
    check_shape(boxes, ["F", 4], "boxes", dtype="float")
    check_shape(points, ["F", 5, 2], "points", dtype="float")
    height, width = dims["H"], dims["W"]
    n = boxes.shape[0]
    boxes_c, points_c = boxes.detach().float().cpu(), points.detach().float().cpu()
    size = torch.maximum(boxes_c[:, 2] - boxes_c[:, 0], boxes_c[:, 3] - boxes_c[:, 1]).clamp_min(1.0)
    left = (boxes_c[:, 0] - WINDOW * size).floor().clamp(0, width).long()
    top = (boxes_c[:, 1] - WINDOW * size).floor().clamp(0, height).long()
    right = (boxes_c[:, 2] + WINDOW * size).ceil().clamp(0, width).long()
    bottom = (boxes_c[:, 3] + WINDOW * size).ceil().clamp(0, height).long()
    h = int((bottom - top).max()) if n else 1
    w = int((right - left).max()) if n else 1
    out = torch.zeros((n, max(h, 1), max(w, 1), 3), dtype=torch.uint8, device=frames.device)
    shift = torch.stack([left, top], dim=1).float()
    local_points = points_c - shift[:, None, :]
    local_boxes = boxes_c - shift.repeat(1, 2)
    regions = face_regions(local_boxes, local_points)
    for k in range(n):
        x0, y0, x1, y1 = int(left[k]), int(top[k]), int(right[k]), int(bottom[k])
        out[k, : y1 - y0, : x1 - x0] = frames[int(index[k]), y0:y1, x0:x1]
        # the face's own window only: the zero padding beyond it (a face at the frame's right or
        # bottom edge, batched with a larger window) is not part of its frame's region mean
        redact_faces_(out[k, : y1 - y0, : x1 - x0], regions[k : k + 1], "flat")
    return out, local_points.to(points.device)
