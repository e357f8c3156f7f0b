"""Probing a video file: size, rates, timestamps, rotation, colour and every stream.

``probe`` opens the file with PyAV, demuxes the video stream's packets (no decoding except
the first frame, which carries the rotation and colour tags) and returns a frozen
:class:`VideoInfo`. Every problem with the input becomes a :class:`VideoReadError` that
names the file and says what is wrong with it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from reenact.errors import VideoReadError

log = logging.getLogger(__name__)

# Demuxers that serve single pictures (or picture sequences) rather than videos.
_IMAGE_FORMATS = {"image2", "image2pipe", "gif_pipe", "webp_pipe"}


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of a file (copied untouched by the writer)."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    language: str | None = None


@dataclass(frozen=True)
class SubtitleStreamInfo:
    """One subtitle stream of a file."""

    index: int
    codec: str
    time_base: Fraction
    language: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as measured by :func:`probe`.

    ``avg_fps`` is frames / duration as the container states it; ``real_fps`` is the
    stream's base ("real") frame rate, the smallest rate that represents every timestamp.
    ``rotation`` is the display-matrix rotation in degrees (PyAV's ``frame.rotation``
    convention, counter-clockwise; 0 when absent). ``is_vfr`` is true when frame
    durations differ by more than rounding explains (1 tick, 1 ms or 0.5 %). ``frame_count`` counts the video
    packets that carry a timestamp; ``duration`` is last pts - first pts + the last
    frame's duration (the mean frame step where the file does not say), in seconds. ``colorspace``/``color_range``/``color_primaries``/``color_trc`` are the
    FFmpeg enum values of the first frame (2 = unspecified), which the reader uses for
    YUV->RGB and the writer re-uses for RGB->YUV and tags.
    """

    path: Path
    width: int
    height: int
    avg_fps: float
    real_fps: float
    time_base: Fraction
    frame_count: int
    duration: float
    rotation: int
    pix_fmt: str
    is_vfr: bool
    codec: str = ""
    start_pts: int = 0
    audio_streams: tuple[AudioStreamInfo, ...] = ()
    subtitle_streams: tuple[SubtitleStreamInfo, ...] = ()
    colorspace: int = 2
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2
    container_format: str = ""
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def check_input_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path, or raise VideoReadError when it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"{p}: file not found; check the path (and quoting of spaces)")
    if p.is_dir():
        raise VideoReadError(f"{p}: is a folder, not a video file; give one video file")
    if not os.access(p, os.R_OK):
        raise VideoReadError(f"{p}: not readable (permission denied); fix its permissions")
    if p.stat().st_size == 0:
        raise VideoReadError(f"{p}: file is empty (0 bytes); give a video file")
    return p


def open_input(path: Path) -> Any:
    """Open ``path`` with PyAV, turning its failures into a VideoReadError naming the file."""
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoReadError(
            f"{path}: cannot be opened as a video ({exc.strerror or exc}); the file is "
            "not a video, is truncated or corrupt, or uses an unsupported container"
        ) from exc


def video_stream_of(container: Any, path: Path) -> Any:
    """The first video stream of an open container; refuses stills and audio-only files."""
    fmt = container.format.name or ""
    if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):
        raise VideoReadError(
            f"{path}: is a still image ({fmt}), not a video; give a video file "
            "(images are read with reenact.io.read_image)"
        )
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoReadError(
            f"{path}: has no video stream (streams: {', '.join(kinds)}); give a file with video"
        )
    stream = container.streams.video[0]
    if stream.disposition & av.stream.Disposition.attached_pic:
        raise VideoReadError(f"{path}: its only video is an attached picture (cover art), not a video")
    return stream


def _rate(value: Fraction | None) -> float:
    return float(value) if value else 0.0


def _scan(container: Any, stream: Any, path: Path) -> tuple[list[int], Any, int]:
    """Demux the video packets (decoding only until the first frame appears).

    Returns the sorted presentation timestamps of the shown packets, the first decoded frame
    (None when no packet decodes) and the duration of the last frame (0 if unknown).
    """
    pts: list[int] = []
    first = None
    last_pts, last_dur = None, 0
    try:
        for packet in container.demux(stream):
            # packets an edit list marks as discarded (e.g. frames before a stream-copy cut
            # point) are decoded for reference but never shown: they are not frames
            if packet.pts is not None and not getattr(packet, "is_discard", False):
                pts.append(int(packet.pts))
                if last_pts is None or packet.pts > last_pts:
                    last_pts, last_dur = int(packet.pts), int(packet.duration or 0)
            if first is None and packet.size:
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError:
                    frames = []
                if frames:
                    first = frames[0]
    except av.error.FFmpegError as exc:
        raise VideoReadError(
            f"{path}: demuxing failed after {len(pts)} packets ({exc.strerror or exc}); "
            "the file is truncated or corrupt"
        ) from exc
    if first is None and pts:
        try:
            frames = stream.decode(None)
        except av.error.FFmpegError:
            frames = []
        first = frames[0] if frames else None
    pts.sort()
    return pts, first, last_dur


def _is_vfr(pts: list[int], time_base: Fraction) -> bool:
    """Whether frame steps vary by more than rounding (1 tick, 1 ms or 0.5 %) explains.

    Containers that store milliseconds (Matroska/WebM, or MP4 re-timed from them) round
    a constant 29.97 fps to alternating 33/34 ms steps; that is still a constant rate.
    """
    if len(pts) < 3:
        return False
    diffs = sorted(b - a for a, b in zip(pts[:-1], pts[1:], strict=True))
    median = diffs[len(diffs) // 2]
    one_ms = int(Fraction(1, 1000) / time_base) + 1
    tol = max(1, median // 200, one_ms)
    return diffs[0] < median - tol or diffs[-1] > median + tol


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Measure a video file: size, rates, time base, frames, duration, rotation, streams.

    Raises VideoReadError (naming the file) for a missing file, a folder, a file that is
    not a video, an audio-only file, a still image, a truncated file or a video stream
    without frames.
    """
    p = check_input_path(path)
    container = open_input(p)
    try:
        stream = video_stream_of(container, p)
        tb = stream.time_base or Fraction(1, 90000)
        audio = tuple(
            AudioStreamInfo(
                index=s.index,
                codec=s.codec_context.name,
                sample_rate=int(s.codec_context.sample_rate or 0),
                channels=int(s.codec_context.channels or 0),
                time_base=s.time_base or Fraction(1, max(1, int(s.codec_context.sample_rate or 1))),
                language=s.language,
            )
            for s in container.streams.audio
        )
        subs = tuple(
            SubtitleStreamInfo(
                index=s.index,
                codec=s.codec_context.name,
                time_base=s.time_base or Fraction(1, 1000),
                language=s.language,
            )
            for s in container.streams.subtitles
        )
        pts, first, last_dur = _scan(container, stream, p)
        if not pts:
            raise VideoReadError(f"{p}: the video stream holds no frames; give a video with frames")
        if first is None:
            raise VideoReadError(
                f"{p}: none of its {len(pts)} video packets decodes to a frame; the file is "
                "truncated or corrupt"
            )
        fps_avg = _rate(stream.average_rate)
        fps_real = _rate(stream.base_rate) or _rate(stream.guessed_rate) or fps_avg
        if len(pts) >= 2:
            step = Fraction(pts[-1] - pts[0], len(pts) - 1) * tb
            frame_dur = float(step)
            if not fps_avg:
                fps_avg = 1.0 / frame_dur if frame_dur > 0 else 0.0
        else:
            frame_dur = 1.0 / fps_avg if fps_avg else 0.0
        if last_dur > 0:
            frame_dur = float(last_dur * tb)
        duration = float((pts[-1] - pts[0]) * tb) + frame_dur
        return VideoInfo(
            path=p,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            avg_fps=fps_avg,
            real_fps=fps_real,
            time_base=Fraction(tb),
            frame_count=len(pts),
            duration=duration,
            rotation=int(first.rotation) % 360,
            pix_fmt=str(stream.codec_context.pix_fmt or first.format.name),
            is_vfr=_is_vfr(pts, Fraction(tb)),
            codec=stream.codec_context.name,
            start_pts=pts[0],
            audio_streams=audio,
            subtitle_streams=subs,
            colorspace=int(first.colorspace),
            color_range=int(first.color_range),
            color_primaries=int(first.color_primaries),
            color_trc=int(first.color_trc),
            container_format=container.format.name or "",
            metadata=dict(container.metadata),
        )
    finally:
        container.close()
