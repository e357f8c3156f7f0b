"""Short clips cut from the fixture videos, and their frames, for tests and benches (one
helper each for all)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def cut_clip(src: Path, dst: Path, frames: int, crf: int = 12) -> Path:
    """Write the first ``frames`` frames of ``src`` to ``dst`` with the audio of that span.

    The video is re-encoded with x264 at ``crf`` (12: visually lossless; lower is closer to
    the source), at the source's frame rate; the audio packets of the span are copied as they
    are. Returns ``dst``.
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": str(crf)}
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = out.add_stream_from_template(ain) if ain is not None else None
        seconds = frames / float(rate)
        for i, frame in enumerate(inp.decode(vin)):
            if i >= frames:
                break
            for packet in vout.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
        if ain is not None and aout is not None:
            inp.seek(0)
            for packet in inp.demux(ain):
                if packet.dts is None or packet.size == 0:
                    continue
                if float(packet.dts * packet.time_base) >= seconds:
                    break
                packet.stream = aout
                out.mux(packet)
    return dst


def read_frames(path: Path, limit: int | None = None) -> np.ndarray:
    """The frames of a (short) clip decoded by PyAV, the first ``limit`` when given.

    Conventions: returns uint8 [T,H,W,3] RGB.
    """
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return np.stack(frames)
