"""Tiny generated test videos and checks for the io tests (written with PyAV)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def pattern(index: int, height: int, width: int) -> np.ndarray:
    """A smooth moving colour pattern (compresses well, so PSNR checks are meaningful)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin((x + 3 * index) / 9.0)
    g = 128 + 100 * np.cos((y - 2 * index) / 7.0)
    b = 128 + 90 * np.sin((x + y + 5 * index) / 13.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    *,
    frames: int = 6,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    rotation: int = 0,
    pts: Sequence[int] | None = None,
    time_base: Fraction = Fraction(1, 12800),
    audio: bool = False,
    faststart: bool = False,
) -> Path:
    """Write a small test video; ``pts`` (in ``time_base``) gives variable frame rates."""
    options = {"movflags": "faststart"} if faststart else {}
    out = av.open(str(path), mode="w", options=options)
    stream: Any = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "12"}
    if rotation:
        stream.set_display_rotation(rotation)
    a_stream: Any = None
    if audio:
        a_stream = out.add_stream("aac", rate=16000)
        a_stream.layout = "mono"
    step = round(1 / (fps * time_base))
    stamps = list(pts) if pts is not None else [i * step for i in range(frames)]
    for i, p in enumerate(stamps):
        frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
        frame = frame.reformat(format=pix_fmt)
        frame.pts, frame.time_base = p, time_base
        out.mux(stream.encode(frame))
        if a_stream is not None:
            t0 = i * 16000 // fps
            n = (i + 1) * 16000 // fps - t0
            tone = 0.2 * np.sin(2 * np.pi * 440 * (t0 + np.arange(n)) / 16000)
            af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, t0
            out.mux(a_stream.encode(af))
    out.mux(stream.encode(None))
    if a_stream is not None:
        out.mux(a_stream.encode(None))
    out.close()
    return path


def write_audio_only(path: Path) -> Path:
    out = av.open(str(path), mode="w")
    a: Any = out.add_stream("aac", rate=16000)
    a.layout = "mono"
    af = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp", layout="mono")
    af.sample_rate, af.pts = 16000, 0
    out.mux(a.encode(af))
    out.mux(a.encode(None))
    out.close()
    return path


def write_zero_frame(path: Path) -> Path:
    """A Matroska file with a declared H.264 video stream and no video packets.

    (The MP4 muxer drops empty tracks, so an audio stream keeps the file valid.)
    """
    out = av.open(str(path), mode="w")
    v: Any = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    a: Any = out.add_stream("aac", rate=16000)
    a.layout = "mono"
    af = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.float32), format="fltp", layout="mono")
    af.sample_rate, af.pts = 16000, 0
    out.mux(a.encode(af))
    out.mux(a.encode(None))
    out.close()
    return path


def decode_all(path: Path) -> tuple[list[np.ndarray], list[Fraction], int]:
    """Every frame as RGB, its time in seconds, and the stream rotation, via plain PyAV."""
    frames: list[np.ndarray] = []
    times: list[Fraction] = []
    rot = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base or Fraction(1)
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(int(f.pts or 0) * tb)
            rot = f.rotation
    return frames, times, rot


def audio_packets(path: Path) -> list[list[tuple[bytes, Fraction]]]:
    """Per audio stream: (payload bytes, presentation time) of every packet."""
    with av.open(str(path)) as c:
        streams = list(c.streams.audio)
        if not streams:
            return []
        out: list[list[tuple[bytes, Fraction]]] = [[] for _ in streams]
        where = {s.index: i for i, s in enumerate(streams)}
        for p in c.demux(*streams):
            if p.size and p.pts is not None:
                out[where[p.stream.index]].append((bytes(p), p.pts * p.time_base))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def tagged_copy(src: Path, dst: Path, tags: dict[str, str], video_tags: dict[str, str]) -> Path:
    """``src`` remuxed (every stream copied packet for packet) with container ``tags`` and
    video-stream ``video_tags`` added, so a metadata check has something to compare."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        out.metadata.update(tags)
        streams = {}
        for s in inp.streams:
            if s.type not in ("video", "audio"):
                continue
            o = out.add_stream_from_template(s)
            if s.type == "video":
                o.metadata.update(video_tags)
            streams[s.index] = o
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst
