"""Reading video frames in chunks, as uint8 torch tensors with their timestamps.

Two decoders sit behind one interface: PyAV (FFmpeg through PyAV, frame-threaded) and
decord. Both convert YUV to RGB with the colour matrix the stream is tagged with and give
identical pixels. ``backend="auto"`` picks :data:`DEFAULT_BACKEND` (chosen by
``bench/io.py``) and falls back to PyAV, logging once why, where decord cannot serve:
variable frame rate (decord's index assumes a constant rate), more than 8 bits per
sample, or a file decord refuses or counts differently from the demuxer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch

from reenact.errors import ConfigError, ShapeError, VideoReadError
from reenact.io.probe import VideoInfo, open_input, probe, video_stream_of
from reenact.threads import current as thread_budget

log = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "av"]

#: What ``backend="auto"`` tries first, set by measurement (``bench/io.py``, six fixture
#: clips, 360p-1080p, 2-core CPU): with the thread budget's one decoder thread each, decord
#: takes 1.18x PyAV's CPU per frame (geometric mean; 0.85-1.69x per clip, 1.69x on the
#: 1080p crowd clip) and the CPU a decoder takes is what it takes from compute in a run.
#: Unbudgeted (every core each, before reenact.threads), decord measured 0.39-0.55x PyAV's
#: wall speed at first and 1.18x later. decord also has failure modes PyAV lacks
#: (dmlc/decord#373: get_batch loops forever in native code, holding the GIL, so Ctrl-C and
#: SIGTERM cannot clean up, on a file whose container over-reports its frame count;
#: #195/#54: get_batch/seek returning wrong frames on some files; no release since 2021).
DEFAULT_BACKEND: Literal["decord", "av"] = "av"

# Pixel formats decord serves exactly like PyAV (8-bit, planar YUV).
_DECORD_PIX_FMTS = {
    "yuv420p",
    "yuvj420p",
    "yuv422p",
    "yuvj422p",
    "yuv444p",
    "yuvj444p",
    "nv12",
}

_warned: set[str] = set()
_warn_lock = threading.Lock()


def _log_once(key: str, message: str) -> None:
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


#: Default bound of each of the streaming engine's two queues, in bytes of frames (8 MiB:
#: one full chunk ahead of compute and one behind it). Compute is the slowest stage on
#: every machine measured, so deeper queues only held frames: on the 720p fixture clip
#: (deidentify, 60 frames) 64 MiB peaked 46 MiB higher than 16 MiB at the same wall time.
DEFAULT_QUEUE_BYTES = 8 * 1024 * 1024

#: Default bound of one chunk, in bytes of frames (8 MiB: 10 frames at 512x512, 3 at 720p,
#: 1 at 1080p). A chunk, once stacked, copied and blended, is held several times over; see
#: ReadSettings. Against 16 MiB (with the CLI's 4 MiB mmap threshold, reenact.allocator),
#: 8 MiB chunks and queues took the 720p clip's synthetic run from a 1012 to a 954 MiB peak
#: and from 1.9M to 1.3M page faults (smaller buffers, reused instead of mapped anew).
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ReadSettings:
    """Settings of the video reader (composable into the pipeline's config).

    ``chunk_size``: most frames per chunk. ``chunk_bytes``: most bytes of decoded frames
    per chunk (at least one frame), on the way in and on the way out (the batches that leave
    the face stages for the encoder, :class:`reenact.pipeline.slots.FrameSlots`): the
    pipeline reads :meth:`frames_per_chunk` frames at a time, so a chunk of large frames stays small (16 frames are 12 MiB at 512x512 but
    42 MiB at 720p and 95 MiB at 1080p, and a run holds several chunks: one decoding, the
    queued ones, the ones in compute and the one encoding). ``backend``: decoder.
    ``queue_bytes``: the most bytes of decoded frames each of the streaming engine's two
    queues (decoded -> compute, compute -> encoder) holds (``run_stream(...,
    queue_bytes=)``); one chunk always passes, so memory is about ``2 * queue_bytes`` plus
    the chunks being worked on.
    """

    chunk_size: int = 16
    backend: Backend = "auto"
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        if not isinstance(self.queue_bytes, int) or self.queue_bytes < 1:
            raise ConfigError(f"queue_bytes must be a positive integer, got {self.queue_bytes!r}")
        if not isinstance(self.chunk_bytes, int) or self.chunk_bytes < 1:
            raise ConfigError(f"chunk_bytes must be a positive integer, got {self.chunk_bytes!r}")

    def frames_per_chunk(self, width: int, height: int) -> int:
        """Frames per chunk for ``width`` x ``height`` RGB frames: ``chunk_size``, cut so that a
        chunk holds at most ``chunk_bytes`` (at least one frame)."""
        if width < 1 or height < 1:
            raise ConfigError(f"frame size must be positive, got {width}x{height}")
        return max(1, min(self.chunk_size, self.chunk_bytes // (width * height * 3)))


@dataclass
class FrameChunk:
    """Consecutive decoded frames of one video.

    Conventions:
        frames: uint8 ``[T,H,W,3]`` RGB, on any device.
        pts: int64 ``[T]`` on the CPU, presentation timestamps in the video stream's
            time base (``VideoInfo.time_base``), strictly increasing.
        start_index: index in the video of ``frames[0]`` (0-based, decode order = display
            order).
    """

    frames: torch.Tensor
    pts: torch.Tensor
    start_index: int

    def __post_init__(self) -> None:
        f, p = self.frames, self.pts
        if not isinstance(f, torch.Tensor) or f.dtype != torch.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ShapeError(
                f"FrameChunk.frames must be a uint8 tensor [T,H,W,3], got "
                f"{getattr(f, 'dtype', type(f))} {tuple(getattr(f, 'shape', ()))}"
            )
        if not isinstance(p, torch.Tensor) or p.dtype != torch.int64 or p.ndim != 1:
            raise ShapeError(
                f"FrameChunk.pts must be an int64 tensor [T], got "
                f"{getattr(p, 'dtype', type(p))} {tuple(getattr(p, 'shape', ()))}"
            )
        if p.shape[0] != f.shape[0]:
            raise ShapeError(f"FrameChunk has {f.shape[0]} frames but {p.shape[0]} timestamps")
        if self.start_index < 0:
            raise ShapeError(f"FrameChunk.start_index must be >= 0, got {self.start_index}")

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _decord_unfit_reason(info: VideoInfo) -> str | None:
    if info.is_vfr:
        return "variable frame rate"
    if info.pix_fmt not in _DECORD_PIX_FMTS:
        return f"pixel format {info.pix_fmt}"
    try:
        import decord  # noqa: F401
    except ImportError:  # pragma: no cover - decord is a dependency
        return "decord is not installed"
    return None


class VideoReader:
    """Iterate a video as :class:`FrameChunk` s; also a context manager.

    ``info`` is the file's :class:`VideoInfo`; ``backend`` the decoder in use ("av" or
    "decord"). Iterating twice decodes the file twice.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = 16,
        device: str | torch.device = "cpu",
        backend: Backend = "auto",
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if backend not in ("auto", "decord", "av"):
            raise ConfigError(f"backend must be 'auto', 'decord' or 'av', got {backend!r}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device {device!r} is not a torch device ({exc})") from exc
        self.info: VideoInfo = probe(path)
        self.path: Path = self.info.path
        self.chunk_size = chunk_size
        self._decord_vr: Any = None
        self._closed = False
        self.backend: Literal["av", "decord"] = self._choose(backend)

    def _choose(self, requested: Backend) -> Literal["av", "decord"]:
        want = DEFAULT_BACKEND if requested == "auto" else requested
        if want == "av":
            return "av"
        reason = _decord_unfit_reason(self.info)
        if reason is None:
            reason = self._open_decord()
        if reason is None:
            return "decord"
        if requested == "decord":
            raise VideoReadError(
                f"{self.path}: decord cannot read this video ({reason}); use backend='av' or 'auto'"
            )
        _log_once(
            f"fallback:{reason.split(' (')[0]}",
            f"decord cannot serve {self.path.name} ({reason}); decoding with PyAV instead",
        )
        return "av"

    def _open_decord(self) -> str | None:
        import decord

        try:
            vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=thread_budget().decoder)
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError
            return f"decord refused the file: {str(exc).splitlines()[0][:120]}"
        if len(vr) != self.info.frame_count:
            return f"decord counts {len(vr)} frames, the demuxer {self.info.frame_count}"
        self._decord_vr = vr
        return None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        self._decord_vr = None
        self._closed = True

    def __iter__(self) -> Iterator[FrameChunk]:
        if self._closed:
            raise VideoReadError(f"{self.path}: reader is closed")
        if self.backend == "decord":
            yield from self._iter_decord()
        else:
            yield from self._iter_av()

    def _emit(self, buf: torch.Tensor, pts: list[int], start: int) -> FrameChunk:
        frames = buf if self.device.type == "cpu" else buf.to(self.device, non_blocking=True)
        return FrameChunk(frames=frames, pts=torch.tensor(pts, dtype=torch.int64), start_index=start)

    def _iter_av(self) -> Iterator[FrameChunk]:
        info = self.info
        h, w, n = info.height, info.width, self.chunk_size
        container = open_input(self.path)
        try:
            stream = video_stream_of(container, self.path)
            stream.thread_type = "AUTO"
            stream.thread_count = thread_budget().decoder  # FFmpeg would take one per core
            index = 0
            buf = self._new_buffer(n, h, w)
            pts: list[int] = []
            last_pts: int | None = None
            step = _nominal_step(info)
            frames_iter = container.decode(stream)
            while True:
                try:
                    frame = next(frames_iter)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    raise VideoReadError(
                        f"{self.path}: decoding failed at frame {index} of {info.frame_count} "
                        f"({exc.strerror or exc}); the file is truncated or corrupt"
                    ) from exc
                if frame.width != w or frame.height != h:
                    raise VideoReadError(
                        f"{self.path}: frame {index} is {frame.width}x{frame.height}, the "
                        f"stream {w}x{h}; videos that change size mid-stream are not supported"
                    )
                p = frame.pts
                if p is None:
                    p = (last_pts + step) if last_pts is not None else info.start_pts
                last_pts = int(p)
                buf[len(pts)].numpy()[...] = frame.to_ndarray(format="rgb24")
                pts.append(last_pts)
                if len(pts) == n:
                    yield self._emit(buf, pts, index + 1 - n)
                    buf = self._new_buffer(n, h, w)
                    pts = []
                index += 1
            if pts:
                yield self._emit(buf[: len(pts)], pts, index - len(pts))
            if index < info.frame_count:
                raise VideoReadError(
                    f"{self.path}: only {index} of {info.frame_count} frames decode; the file "
                    "is truncated or corrupt"
                )
        finally:
            container.close()

    def _iter_decord(self) -> Iterator[FrameChunk]:
        vr = self._decord_vr
        info = self.info
        total = len(vr)
        tb = info.time_base
        offset = _stream_start(self.path)
        for start in range(0, total, self.chunk_size):
            idx = list(range(start, min(total, start + self.chunk_size)))
            try:
                arr = vr.get_batch(idx).asnumpy()
                secs = vr.get_frame_timestamp(idx)[:, 0]
            except Exception as exc:
                raise VideoReadError(
                    f"{self.path}: decord failed at frames {idx[0]}-{idx[-1]} "
                    f"({str(exc).splitlines()[0][:120]}); the file is truncated or corrupt"
                ) from exc
            if arr.shape[1:] != (info.height, info.width, 3):
                raise VideoReadError(
                    f"{self.path}: decord gave frames {arr.shape[1:]}, expected "
                    f"{(info.height, info.width, 3)}; use backend='av'"
                )
            pts = [int(round(float(s) / float(tb))) + offset for s in secs]
            yield self._emit(torch.from_numpy(np.ascontiguousarray(arr)), pts, start)

    def _new_buffer(self, n: int, h: int, w: int) -> torch.Tensor:
        pin = self.device.type == "cuda"
        return torch.empty((n, h, w, 3), dtype=torch.uint8, pin_memory=pin)


def _nominal_step(info: VideoInfo) -> int:
    fps = info.avg_fps or info.real_fps or 25.0
    return max(1, int(round(1.0 / (fps * float(info.time_base)))))


def _stream_start(path: Path) -> int:
    """The video stream's start_time (decord reports timestamps relative to it)."""
    container = open_input(path)
    try:
        return int(video_stream_of(container, path).start_time or 0)
    finally:
        container.close()


def open_video(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = 16,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
) -> VideoReader:
    """Open a video for chunked reading; use as ``with open_video(p) as r: for c in r: ...``.

    Conventions:
        yields FrameChunk: frames uint8 ``[T,H,W,3]`` RGB on ``device``, pts int64 ``[T]``
        in ``reader.info.time_base``; every chunk has ``chunk_size`` frames but the last.

    Raises VideoReadError (naming the file and the problem) for inputs that are not
    readable videos, ConfigError for bad arguments.
    """
    return VideoReader(path, chunk_size=chunk_size, device=device, backend=backend)
