"""An MP4 whose edit list hides its first frames (a stream-copy cut) reads and round-trips."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from reenact.io import VideoWriter, open_video, probe


def _cut_with_edit_list(tmp_path: Path, frames: int = 20, hidden: int = 3) -> Path:
    src, dst = tmp_path / "src.mp4", tmp_path / "cut.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bframes": "0"}
        for i in range(frames):
            img = np.full((48, 64, 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    # shift timestamps so the first frames fall before 0: the muxer writes an edit list hiding them
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        step = int(1 / (25 * vin.time_base))
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.pts -= hidden * step
            packet.dts -= hidden * step
            packet.stream = vout
            out.mux(packet)
    return dst


def test_frames_hidden_by_an_edit_list_are_not_counted_and_reading_succeeds(tmp_path: Path) -> None:
    clip = _cut_with_edit_list(tmp_path)
    with av.open(str(clip)) as c:
        shown = sum(1 for _ in c.decode(video=0))
    info = probe(clip)
    assert info.frame_count == shown
    assert abs(info.duration - shown / 25) < 1 / 25 + 1e-6
    with open_video(clip) as reader:
        chunks = list(reader)
    assert sum(len(c) for c in chunks) == shown
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info, source=clip) as writer:
        for chunk in chunks:
            writer.write(chunk)
    assert probe(out).frame_count == shown
