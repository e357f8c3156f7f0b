"""Frame slots: each decoded frame waits in a slot until all its faces have a latent, then
ready frames leave in order, in batches of at most ``max_batch``.

Conventions: ``FrameSlot.frame`` uint8 ``[H,W,3]``; ``FaceRecord.box`` float ``[4]`` and
``points`` float ``[5,2]`` frame pixels; ``M`` float ``[2,3]`` frame -> crop pixels;
``ws`` float ``[num_ws,w_dim]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reenact.errors import PipelineError
from reenact.faces import FaceDetections


@dataclass
class FaceRecord:
    """One face in one frame as it moves through the steps. ``track_id`` -1: an untracked detection."""

    track_id: int
    box: np.ndarray
    points: np.ndarray
    M: torch.Tensor | None = None
    ws: torch.Tensor | None = None
    failed: str | None = None


@dataclass
class FrameSlot:
    """A frame waiting for its faces."""

    index: int
    frame: torch.Tensor
    pts: int
    raw: FaceDetections | None = None
    tracked: bool = False
    faces: list[FaceRecord] = field(default_factory=list)
    faces_seen: int = 0

    def ready(self) -> bool:
        return self.tracked and all(f.ws is not None or f.failed is not None for f in self.faces)


class FrameSlots:
    """The frames in flight, and the face records of each (frame index, track id)."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.slots: dict[int, FrameSlot] = {}
        self.records: dict[tuple[int, int], FaceRecord] = {}
        self.next_emit = 0

    def add(self, start_index: int, frames: torch.Tensor, pts: torch.Tensor) -> None:
        """Conventions: frames uint8 [T,H,W,3]; pts int [T]."""
        for i in range(frames.shape[0]):
            self.slots[start_index + i] = FrameSlot(start_index + i, frames[i], int(pts[i]))

    def __getitem__(self, frame_index: int) -> FrameSlot:
        return self.slots[frame_index]

    def add_face(self, frame_index: int, record: FaceRecord) -> None:
        self.slots[frame_index].faces.append(record)
        if record.track_id >= 0:
            self.records[(frame_index, record.track_id)] = record

    def record(self, frame_index: int, track_id: int) -> FaceRecord:
        return self.records[(frame_index, track_id)]

    def find(self, frame_index: int, track_id: int) -> FaceRecord | None:
        """The record, or None when its frame has left already (a redacted face's frame
        does not wait for the smoothers)."""
        return self.records.get((frame_index, track_id))

    def pop_ready(self, final: bool = False) -> list[list[FrameSlot]]:
        """The next ready frames, in order, in batches; ``final``: every frame must be ready."""
        ready: list[FrameSlot] = []
        while self.next_emit in self.slots and self.slots[self.next_emit].ready():
            slot = self.slots.pop(self.next_emit)
            for f in slot.faces:
                self.records.pop((slot.index, f.track_id), None)
            ready.append(slot)
            self.next_emit += 1
        if final and self.next_emit in self.slots:
            raise PipelineError(f"frame {self.next_emit} was never completed by the face stages")
        return [ready[k : k + self.max_batch] for k in range(0, len(ready), self.max_batch)]
