"""The output identity check and fail-closed redaction.

* :func:`check_identities`: every replaced face of the composited frames is embedded and
  compared with what the identity policy says (the target, or the original person); a face
  that fails the policy's check is marked failed.
* :func:`untracked_faces`: detections that no released track covers (fail-closed modes).
* :func:`redact`: counts every face once (replaced, blurred or left) and, when the policy
  redacts, blurs failed faces (no identity, failed check, refused by the blender, untracked)
  with :func:`blur_boxes`: never left as they were.

Conventions: frames uint8 ``[T,H,W,3]`` (``[H,W,3]`` for :func:`blur_boxes`) RGB; boxes
float ``[N,4]`` (x1, y1, x2, y2) and points ``[N,5,2]`` frame pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reenact.errors import ShapeError
from reenact.faces import FaceDetections, cosine_similarity
from reenact.faces.boxes import box_iou
from reenact.pipeline.identity import IdentityPolicy, TrackIdentity
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord, FrameSlot

Embed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""frames uint8 [T,H,W,3], frame index long [F], points float [F,5,2] -> codes float [F,D]."""

COVER_IOU = 0.3
"""A detection overlapping a released track's box by more than this IoU counts as covered."""


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


def check_identities(
    out: torch.Tensor, faces: list[tuple[int, FaceRecord]], frame_indices: list[int], embed: Embed,
    policy: IdentityPolicy, identities: dict[int, TrackIdentity], report: RunReport,
) -> None:
    """Embed each replaced face of ``out`` and compare it with what ``policy`` says.

    ``faces``: (row of ``out``, record) pairs; ``frame_indices[row]`` is the frame's index in
    the video. Records whose face fails ``policy.check`` get ``failed`` set; every similarity
    goes into the track's report.
    """
    if out.dtype != torch.uint8 or out.ndim != 4 or len(frame_indices) != out.shape[0]:
        raise ShapeError(f"frames must be uint8 [T,H,W,3] with T={len(frame_indices)} frame indices, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not faces:
        return
    index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=out.device)
    points = torch.from_numpy(np.stack([f.points for _j, f in faces])).to(out.device)
    with report.timer("identity"):
        codes = embed(out, index, points)
    for (j, record), code in zip(faces, codes, strict=True):
        ref = policy.compare_with(identities[record.track_id])
        sim = float(cosine_similarity(code[None], ref[None].to(code.device)).reshape(-1)[0])
        report.tracks[record.track_id].add_similarity(frame_indices[j], sim)
        reason = policy.check(sim)
        if reason is not None:
            record.failed = reason


def untracked_faces(raw: FaceDetections, tracked_boxes: np.ndarray) -> list[FaceRecord]:
    """Detections that no released track covers, as failed records (track id -1).

    Faces of tracks that ``--faces`` left out on purpose count as covered.
    """
    out = []
    for box in raw.boxes:
        if not bool((box_iou(box, tracked_boxes) > COVER_IOU).any()):
            out.append(FaceRecord(-1, box.copy(), np.zeros((5, 2), np.float32), failed="untracked"))
    return out


def redact(out: torch.Tensor, slots: list[FrameSlot], blur: bool, report: RunReport) -> torch.Tensor:
    """Count every face once (replaced, blurred or left); with ``blur`` blur the failed ones.

    Conventions: out uint8 [T,H,W,3], one row per slot; returns the same shape.
    """
    if out.ndim != 4 or out.shape[0] != len(slots):
        raise ShapeError(f"frames must be [T,H,W,3] with T={len(slots)}, got {tuple(out.shape)}")
    rows = []
    for j, slot in enumerate(slots):
        failed = [f for f in slot.faces if f.failed is not None]
        for f in slot.faces:
            if f.track_id == -1:
                report.count("untracked_detections_blurred", int(blur))
                continue
            track = report.tracks[f.track_id]
            track.frames += 1
            if f.failed is None:
                track.replaced += 1
                report.count("faces_replaced")
            else:
                track.blurred += int(blur)
        if blur and failed:
            report.count("faces_blurred", len(failed))
            with report.timer("blend"):
                rows.append(blur_boxes(out[j], torch.from_numpy(np.stack([f.box for f in failed]))))
        else:
            rows.append(out[j])
    return torch.stack(rows)
