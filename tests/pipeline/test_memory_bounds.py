"""What a run holds at once: frames leave the face stages in chunks bounded like the chunks
they came in as (``read.chunk_bytes``), the tracker's delay released at the end included."""

from __future__ import annotations

import torch

from reenact.config import replace
from reenact.io import FrameChunk
from reenact.pipeline import FaceReplacer, PipelineConfig, cached_pack, plan_run


def test_frames_leave_in_chunks_no_larger_than_they_came_in() -> None:
    side = 64
    frame_bytes = side * side * 3
    plan = plan_run("deidentify", replace(PipelineConfig(device="cpu"),
                                          {"deidentify.method": "blur", "read.chunk_bytes": 2 * frame_bytes}))
    pack = cached_pack(plan)
    replacer = FaceReplacer(plan.bind(pack), pack, 25.0)
    delay = plan.config.tracker.delay
    assert delay >= 3, "the tracker's delay must hold back more frames than a chunk for this test to mean anything"
    chunks = [FrameChunk(torch.full((2, side, side, 3), 90 + k, dtype=torch.uint8),
                         torch.arange(2 * k, 2 * k + 2, dtype=torch.int64), 2 * k) for k in range(6)]

    out = list(replacer(iter(chunks)))

    assert [c.start_index for c in out] == sorted(c.start_index for c in out)
    assert sum(len(c) for c in out) == 12, "every frame comes out once"
    # before, the frames the delay held back left at the end as one chunk of `delay + 1` frames
    assert max(len(c) for c in out) <= 2, [len(c) for c in out]
    for c in out:
        assert torch.equal(c.frames, torch.cat([chunks[i // 2].frames[i % 2][None]
                                                for i in range(c.start_index, c.start_index + len(c))]))
