"""Frame slots: each decoded frame waits in a slot until all its faces have a latent, then
ready frames leave in order, in batches of at most ``max_batch`` frames and ``max_bytes``
bytes of frames (at least one frame a batch).

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
    """The frames in flight, and the face records of each (frame index, track id).

    ``max_batch``: most frames a batch of :meth:`pop_ready`. ``max_bytes``: most bytes of
    frames a batch holds (at least one frame; ``None``: no bound), the bound of a decoded
    chunk (``ReadSettings.chunk_bytes``) kept on the way out. Each batch is stacked, copied
    once more by the redaction and queued for the encoder, so a batch of large frames costs
    three times its size: at the end of a 1080p video the tracker's delay releases its last
    6 frames at once, and before this bound they left as one 37 MiB batch (about 110 MiB
    with its copies, the peak of ``deidentify --method blur`` on the fixture crowd clip).
    """

    def __init__(self, max_batch: int, max_bytes: int | None = None) -> None:
        if max_batch < 1 or (max_bytes is not None and max_bytes < 1):
            raise PipelineError(f"FrameSlots needs max_batch >= 1 and max_bytes >= 1, got {max_batch}, {max_bytes}")
        self.max_batch = max_batch
        self.max_bytes = max_bytes
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
        return self._batches(ready)

    def _batches(self, ready: list[FrameSlot]) -> list[list[FrameSlot]]:
        """``ready`` cut into consecutive batches within ``max_batch`` frames and ``max_bytes``."""
        batches: list[list[FrameSlot]] = []
        size = 0
        for slot in ready:
            nbytes = slot.frame.numel() * slot.frame.element_size()
            full = batches and (len(batches[-1]) >= self.max_batch
                                or (self.max_bytes is not None and size + nbytes > self.max_bytes))
            if not batches or full:
                batches.append([])
                size = 0
            batches[-1].append(slot)
            size += nbytes
        return batches
