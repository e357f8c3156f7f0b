"""Short test clips cut from the fixture videos (video re-encoded, audio packets copied)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from testing.models import MOBILEFACE, SCRFD

if TYPE_CHECKING:
    from reenact.pipeline import PipelineConfig


def audio_packets(path: Path) -> list[bytes]:
    """The bytes of every audio packet, in order."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def decode(path: Path) -> tuple[np.ndarray, list[int]]:
    """All frames uint8 [T,H,W,3] and their pts."""
    with av.open(str(path)) as c:
        frames, pts = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(int(f.pts))
    return np.stack(frames), pts


def slow_job(job: object) -> dict[str, object]:
    """A folder-run task for the Ctrl-C test: logs its start, works 3 s, then writes atomically."""
    import time

    output: Path = job.output  # type: ignore[attr-defined]
    with open(output.parent / "starts.log", "a") as log:
        log.write(f"{time.time()} {output.name}\n")
    for _ in range(30):
        time.sleep(0.1)
    tmp = output.with_name(output.name + ".partial")
    tmp.write_text("done")
    tmp.replace(output)
    return {}


def fixture_config(fixtures: Path) -> PipelineConfig:
    """The tiny pack with the fixture detector (SCRFD-500M) and identity model (MobileFace V2, raw 0..255)."""
    from reenact.packs import PackSettings
    from reenact.pipeline import PipelineConfig

    return PipelineConfig(
        models=PackSettings(
            detector_model=str(SCRFD.file(fixtures)),
            identity_model=str(MOBILEFACE.file(fixtures)),
            identity_model_mean=0.0,
            identity_model_std=1.0,
        ),
        device="cpu",
    )
