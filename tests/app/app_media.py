"""Test material for the app tests: short clips cut from the sample, a face-less clip, probes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from testing.media import cut_clip

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "astronaut_clip.mp4"
SAMPLE_PHOTO = REPO / "samples" / "astronaut_identity.jpg"


def short_clip(dest: Path, frames: int = 3) -> Path:
    """The first ``frames`` frames of the sample clip, with the audio of that span."""
    return cut_clip(SAMPLE, dest, frames)


def flat_clip(dest: Path, frames: int = 6, size: int = 128) -> Path:
    """A grey clip with no faces at all."""
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            array = np.full((size, size, 3), 90 + i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


def flat_photo(dest: Path) -> Path:
    """A JPEG photo with no face in it."""
    from PIL import Image

    Image.fromarray(np.full((200, 160, 3), (120, 150, 200), dtype=np.uint8)).save(dest)
    return dest


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
