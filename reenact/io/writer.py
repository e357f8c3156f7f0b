"""Writing video: H.264 by default, source timestamps, rotation, colour and audio kept.

The writer encodes RGB frames with PyAV into a temporary file beside the destination and
renames it into place only when everything was written and the file closed cleanly; on
any error or Ctrl-C the temporary file is removed and an existing destination is left
untouched.

What is kept from the source: each frame's presentation timestamp in the source time base
(so a variable frame rate stays variable), the display-matrix rotation, the colour
matrix/range/primaries/transfer tags (frames are converted RGB->YUV with the same matrix
the reader used for YUV->RGB), every audio stream packet for packet (no re-encoding, bytes
untouched, interleaved with the video as it is written so memory stays bounded), subtitle
streams where the output container accepts them, and the container and stream metadata.

``metadata="strip"`` (what ``deidentify`` uses by default) keeps only what playback needs:
the rotation (display matrix), the colour tags and each stream's ``language``; every other
container and stream tag (GPS ``location``, ``creation_time``, title, comment, encoder,
``handler_name`` ...) and subtitle streams are left out, and the muxer is asked
not to write its own ``encoder`` tag. ``audio="drop"`` leaves the audio out.
:attr:`VideoWriter.stripped` lists what was left out, for the run's report.

Pixel format: the source's chroma layout and bit depth where H.264 has them (yuv420p,
yuv422p, yuv444p and their 10-bit forms), else yuv420p. Odd frame sizes: 4:2:0 and 4:2:2
need even dimensions, so a video with an odd width or height is encoded as 4:4:4 (H.264
High 4:4:4), which keeps every pixel: no cropping and no padding.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from reenact.errors import ConfigError, InputError, OutputExistsError, ShapeError, VideoWriteError
from reenact.io.atomic import NAME_MAX, temp_prefix
from reenact.io.probe import VideoInfo
from reenact.io.reader import FrameChunk
from reenact.threads import current as thread_budget

log = logging.getLogger(__name__)

# Container keys the muxer writes itself; copying them would lie about the new file.
_MUXER_KEYS = {"major_brand", "minor_version", "compatible_brands", "encoder"}
# Stream tags kept by metadata="strip": what a player needs to pick the right track.
_PLAYBACK_KEYS = {"language"}
METADATA_MODES = ("auto", "keep", "strip")
AUDIO_MODES = ("keep", "drop")
# Seconds of source audio muxed ahead of the video written so far.
_AUDIO_LEAD = 0.5
# ``.NAME.partial-XXXXXXXX.SUFFIX`` (``NAME`` cut short and marked ``~`` when long): the
# writer's temporary file, left behind only when its process was killed (SIGKILL, power loss)
_PARTIAL = re.compile(r"\..+[.~]partial-[0-9a-f]{8}(\.[^./]+)?")


def _temp_tag(suffix: str) -> str:
    return f"partial-{uuid.uuid4().hex[:8]}{suffix}"


def is_partial_name(name: str) -> bool:
    """True for the name of a :class:`VideoWriter` temporary file (never a user's video)."""
    return _PARTIAL.fullmatch(name) is not None


def _lock(fd: int) -> bool:
    """Take the lock that says "a live writer owns this temporary file"; False when another has it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): every leftover is taken for one
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_leftovers(outputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Remove the temporary files killed writers of ``outputs`` left beside them; return them.

    Only files of these outputs' names are touched, and only those no live writer holds (each
    writer keeps an exclusive ``flock`` on its temporary file until it is renamed or removed,
    and the system releases it when the process dies, SIGKILL included). Each folder is
    listed once, however many outputs it holds.
    """
    # per folder: (``.NAME.partial-``, suffix) of each output (NAME cut as the writer cuts it)
    prefixes: dict[Path, set[tuple[str, str]]] = {}
    for output in map(Path, outputs):
        tag = _temp_tag(output.suffix)
        prefixes.setdefault(output.parent, set()).add(
            (temp_prefix(output.stem, len(os.fsencode(tag))) + "partial-", output.suffix))
    removed = []
    for folder, starts in prefixes.items():
        try:
            names = [entry.name for entry in os.scandir(folder)
                     if is_partial_name(entry.name) and entry.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            cut = name.rindex("partial-") + len("partial-")
            if (name[:cut], name[cut + 8:]) in starts:
                path = folder / name
                if _remove_unheld(path):
                    removed.append(path)
    return removed


def _remove_unheld(path: Path) -> bool:
    """Remove ``path`` unless a live writer holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not _lock(fd):
            return False
        path.unlink()
        return True
    except OSError as exc:
        log.debug("could not remove the leftover %s: %s", path, exc)
        return False
    finally:
        os.close(fd)


#: x264 presets from fastest to slowest (``EncodeSettings.preset``).
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
    "placebo",
)
#: x264 tunes (``EncodeSettings.tune``; None for none).
X264_TUNES = ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency", "psnr", "ssim")


@dataclass(frozen=True)
class EncodeSettings:
    """Settings of the video encoder (composable into the pipeline's config).

    ``crf``: x264 constant rate factor (lower: better and larger). ``preset``: x264 speed
    preset; ``veryfast`` by default, chosen with the table in ``docs/encoding.md``
    (``python bench/io.py --presets``): at crf 17 / tune grain it encodes 1.5-1.9x as
    fast as ``medium`` at the same PSNR against the input (within 0.1 dB) for files
    about 25-35 % larger. ``tune``: x264 tune (None for none). ``pix_fmt``: None keeps
    the source's chroma layout where H.264 has it.

    ``metadata``: ``keep`` copies the source's container and stream tags, ``strip`` keeps
    only what playback needs (rotation, colour, language); ``auto`` strips in
    ``deidentify`` and keeps in ``reenact``. ``audio``: ``keep`` copies the audio packet
    for packet, ``drop`` leaves it out.
    """

    codec: str = "libx264"
    crf: int = 17
    preset: str = "veryfast"
    tune: str | None = "grain"
    pix_fmt: str | None = None
    metadata: str = "auto"
    audio: str = "keep"

    def __post_init__(self) -> None:
        formats = encoder_pix_fmts(self.codec)  # also refuses a codec this PyAV/FFmpeg cannot encode
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"encode.crf must be an integer in 0..51 (lower: better, larger), got {self.crf!r}")
        if self.pix_fmt is not None and self.pix_fmt not in formats:
            raise ConfigError(
                f"encode.pix_fmt {self.pix_fmt!r} is not a pixel format {self.codec} encodes; choose one of "
                f"{', '.join(formats)} (or leave it unset to keep the source's)"
            )
        if self.metadata not in METADATA_MODES:
            raise ConfigError(f"metadata must be one of {list(METADATA_MODES)}, got {self.metadata!r}")
        if self.audio not in AUDIO_MODES:
            raise ConfigError(f"audio must be one of {list(AUDIO_MODES)}, got {self.audio!r}")
        if self.codec in ("libx264", "libx265") and self.preset not in X264_PRESETS:
            raise ConfigError(f"unknown x264 preset {self.preset!r}; choose one of {list(X264_PRESETS)}")
        if self.codec == "libx264" and self.tune is not None and self.tune not in X264_TUNES:
            raise ConfigError(f"unknown x264 tune {self.tune!r}; choose one of {list(X264_TUNES)} or none")


@functools.lru_cache(maxsize=8)
def encoder_pix_fmts(codec: str) -> tuple[str, ...]:
    """The pixel formats the installed FFmpeg's ``codec`` encoder accepts (asked from PyAV).

    Raises ConfigError when this FFmpeg has no such video encoder.
    """
    try:
        found = av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError) as exc:  # UnknownCodecError is a ValueError
        raise ConfigError(f"encode.codec {codec!r}: this FFmpeg has no such encoder ({exc})") from exc
    if found.type != "video":
        raise ConfigError(f"encode.codec {codec!r} is not a video encoder")
    return tuple(f.name for f in found.video_formats or ())


#: The longest suffix of a file written beside an output (``.report.json``, ``.config.yaml``).
SIDECAR_SUFFIX_BYTES = len(".report.json")


def check_name_length(dst: Path) -> None:
    """Raise :class:`InputError` (exit 2) when ``dst``'s name, or a sidecar beside it
    (``NAME.report.json``), would pass the file system's 255-byte name limit: refused before
    any work, not after the video is written."""
    size = len(os.fsencode(dst.name))
    most = NAME_MAX - SIDECAR_SUFFIX_BYTES
    if size > most:
        raise InputError(
            f"{dst.name[:40]}[...]{dst.suffix}: the output name is {size} bytes; with its report "
            f"(NAME.report.json) it passes the {NAME_MAX}-byte limit of file names: give -o a name of at "
            f"most {most} bytes"
        )


def check_output_path(
    src: str | os.PathLike[str] | None, dst: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Check that ``dst`` can be written before any work starts; return it as a Path.

    Raises OutputExistsError when ``dst`` is the input ``src`` (always, even with
    ``overwrite``) or exists and ``overwrite`` is false; VideoWriteError when ``dst`` is a
    folder, has no file suffix, or its folder is missing or not writable.
    """
    d = Path(dst)
    check_name_length(d)
    if src is not None:
        s = Path(src)
        same = d.exists() and s.exists() and os.path.samefile(s, d)
        if same or d.resolve() == s.resolve():
            raise OutputExistsError(
                f"{d}: is the input video; write the result to a different file"
            )
    if d.is_dir():
        raise VideoWriteError(f"{d}: is a folder; give an output file name such as {d / 'out.mp4'}")
    if not d.suffix:
        raise VideoWriteError(f"{d}: has no file suffix; use e.g. .mp4 or .mkv so the format is known")
    if d.exists() and not overwrite:
        raise OutputExistsError(f"{d}: already exists; pass --overwrite to replace it")
    parent = d.parent
    if not parent.is_dir():
        raise VideoWriteError(f"{d}: folder {parent} does not exist; create it first")
    probe_file = parent / f".reenact-write-test-{uuid.uuid4().hex}"
    try:
        with open(probe_file, "wb"):
            pass
    except OSError as exc:
        raise VideoWriteError(
            f"{d}: cannot write in folder {parent} ({exc.strerror}); choose a writable folder"
        ) from exc
    probe_file.unlink(missing_ok=True)
    return d


# Source pixel formats libx264 encodes as they are (chroma layout and bit depth kept).
_KEEP_PIX_FMTS = {
    "yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le",
}
_ALIASES = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p", "nv12": "yuv420p"}


def pick_pix_fmt(info: VideoInfo, requested: str | None = None, codec: str = "libx264") -> str:
    """The encoder pixel format: the source's chroma layout and bit depth where H.264
    has them, yuv420p otherwise; 4:4:4 when the width or height is odd (4:2:0 and 4:2:2
    need even sizes), so no picture is cropped or padded."""
    if requested:
        return requested
    src = _ALIASES.get(info.pix_fmt, info.pix_fmt)
    fmt = src if codec == "libx264" and src in _KEEP_PIX_FMTS else "yuv420p"
    if src.startswith(("gbr", "rgb", "bgr")):
        fmt = "yuv444p"
    if info.width % 2 or info.height % 2:
        fmt = "yuv444p10le" if fmt.endswith("10le") else "yuv444p"
    return fmt


class VideoWriter:
    """Encode FrameChunks to ``dst``; a context manager that commits only on clean exit.

    Default quality (crf 17, tune "grain") was chosen by measurement: it keeps every
    fixture clip at >= 40 dB PSNR against its decoded source (worst: the MPEG-4 Part 2
    clip, 40.5 dB at preset medium; crf 18 without tune gave 38.3 dB there). The default
    preset (veryfast) is chosen by the speed/quality table in ``docs/encoding.md``.
    ``tune=None`` and a higher ``crf`` give smaller files.

    ``info`` describes the frames (size, time base, rotation, colour); ``source``, when
    given, is the file whose audio/subtitle streams and metadata are copied.
    ``metadata`` (``keep``/``strip``; ``auto`` means keep here, the pipeline resolves it by
    mode) and ``audio`` (``keep``/``drop``) are described in the module docstring;
    :attr:`stripped` lists what was left out (``container_tags``, ``stream_tags``,
    ``streams``).
    """

    def __init__(
        self,
        dst: str | os.PathLike[str],
        info: VideoInfo,
        *,
        source: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        codec: str = "libx264",
        crf: int = EncodeSettings.crf,
        preset: str = EncodeSettings.preset,
        tune: str | None = EncodeSettings.tune,
        pix_fmt: str | None = None,
        metadata: str = "auto",
        audio: str = "keep",
    ) -> None:
        EncodeSettings(codec=codec, crf=crf, preset=preset, tune=tune, pix_fmt=pix_fmt,
                       metadata=metadata, audio=audio)  # validates the choices
        self.strip = metadata == "strip"
        self.drop_audio = audio == "drop"
        #: What the source had that the output leaves out (for the report's ``stripped``).
        self.stripped: dict[str, Any] = {"container_tags": [], "stream_tags": {}, "streams": []}
        #: The source audio streams copied into the output (a voice identifies people too).
        self.audio_kept: list[str] = []
        self.dst = check_output_path(source if source is not None else info.path, dst, overwrite)
        self.info = info
        self.source = Path(source) if source is not None else None
        tag = _temp_tag(self.dst.suffix)
        self.temp = self.dst.parent / f"{temp_prefix(self.dst.stem, len(os.fsencode(tag)))}{tag}"
        self._lock_fd: int | None = None
        self.frames_written = 0
        self._last_pts: int | None = None
        self._done = False
        self._src: Any = None
        self._copy_iter: Any = None
        self._pending: Any = None
        self._copy_map: dict[int, Any] = {}
        try:
            # bitexact: the muxer writes no "encoder" tag of its own when stripping
            options = {"fflags": "+bitexact"} if self.strip else {}
            try:
                self._hold_temp()
            except OSError as exc:
                raise VideoWriteError(f"{self.dst}: cannot create its temporary file {self.temp.name} "
                                      f"({exc.strerror}); check the folder's permissions and free space") from exc
            self._out = av.open(str(self.temp), mode="w", options=options)
        except (av.error.FFmpegError, ValueError) as exc:
            self._remove_temp()
            raise VideoWriteError(
                f"{self.dst}: cannot create output ({exc}); use a known suffix such as .mp4"
            ) from exc
        try:
            self._setup_video(codec, crf, preset, tune, pick_pix_fmt(info, pix_fmt, codec))
            if self.source is not None:
                self._setup_copies()
        except BaseException:
            self._abort()
            raise

    # ----------------------------------------------------------------- set-up
    def _setup_video(
        self, codec: str, crf: int, preset: str, tune: str | None, pix_fmt: str
    ) -> None:
        info = self.info
        rate = Fraction(info.avg_fps or info.real_fps or 25).limit_denominator(1_000_000)
        try:
            stream: Any = self._out.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoWriteError(f"{self.dst}: encoder {codec!r} is not available ({exc})") from exc
        stream.width = info.width
        stream.height = info.height
        stream.pix_fmt = pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        ctx.thread_count = thread_budget().encoder  # x264 would take 1.5 threads per core
        ctx.colorspace = info.colorspace
        ctx.color_range = info.color_range
        ctx.color_primaries = info.color_primaries
        ctx.color_trc = info.color_trc
        if codec in ("libx264", "libx265"):
            options = {"crf": str(crf), "preset": preset}
            if tune:
                options["tune"] = tune
            stream.options = options
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self._video: Any = stream
        self._pix_fmt = pix_fmt

    def _setup_copies(self) -> None:
        assert self.source is not None
        try:
            src = av.open(str(self.source), mode="r")
        except av.error.FFmpegError as exc:
            raise VideoWriteError(f"{self.source}: cannot open source to copy its audio ({exc})") from exc
        self._src = src
        self._out.metadata.update(self._tags(src.metadata, "container", _MUXER_KEYS))
        if src.streams.video:
            v = src.streams.video[0]
            self._video.metadata.update(self._tags(v.metadata, f"{v.index}:video", _MUXER_KEYS))
        copies = []
        for s in src.streams:
            what = f"{s.index}:{s.type}"
            if s.type == "audio" and self.drop_audio:
                self.stripped["streams"].append(f"{what} ({s.codec_context.name}), dropped by --audio drop")
                continue
            if s.type == "subtitle" and self.strip:
                self.stripped["streams"].append(f"{what} ({s.codec_context.name}): subtitles may name people")
                continue
            if s.type not in ("audio", "subtitle"):
                if s.type != "video" or s is not src.streams.video[0]:
                    self.stripped["streams"].append(f"{what} ({s.codec_context.name if s.codec_context else '?'})")
                continue
            try:
                out_stream = self._out.add_stream_from_template(s)
            except (av.error.FFmpegError, ValueError) as exc:
                if s.type == "audio":
                    raise VideoWriteError(
                        f"{self.dst}: cannot copy audio stream {s.index} ({s.codec_context.name}) "
                        f"into this container ({exc}); use .mp4 or .mkv"
                    ) from exc
                log.warning(
                    "%s: subtitle stream %d (%s) cannot be stored in %s; not copied",
                    self.source, s.index, s.codec_context.name, self.dst.suffix,
                )
                continue
            out_stream.metadata.update(self._tags(s.metadata, what, set()))
            if s.type == "audio":
                self.audio_kept.append(f"{what} ({s.codec_context.name})")
            self._copy_map[s.index] = out_stream
            copies.append(s)
        if copies:
            self._copy_iter = src.demux(*copies)

    def _tags(self, tags: Any, where: str, skip: set[str]) -> dict[str, str]:
        """The tags of ``where`` to copy; with ``strip``, the left-out keys go to :attr:`stripped`."""
        keep = {k: v for k, v in dict(tags).items() if k not in skip}
        if not self.strip:
            return keep
        regenerated = skip - {"encoder"}  # brands the muxer writes anew: not "stripped"
        gone = sorted(set(dict(tags)) - regenerated - (_PLAYBACK_KEYS if where != "container" else set()))
        if gone and where == "container":
            self.stripped["container_tags"] = gone
        elif gone:
            self.stripped["stream_tags"][where] = gone
        return {k: v for k, v in keep.items() if k in _PLAYBACK_KEYS and where != "container"}

    # ---------------------------------------------------------------- writing
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def write(self, chunk: FrameChunk) -> None:
        """Encode the frames of ``chunk`` with their timestamps.

        Conventions:
            chunk.frames: uint8 ``[T,H,W,3]`` RGB with H, W = info.height, info.width (any
            device); chunk.pts: int64 ``[T]`` in info.time_base, strictly increasing across
            all chunks written.
        """
        if self._done:
            raise VideoWriteError(f"{self.dst}: writer is already closed")
        frames = chunk.frames
        if tuple(frames.shape[1:]) != (self.info.height, self.info.width, 3):
            raise ShapeError(
                f"VideoWriter({self.dst}) expects frames [T,{self.info.height},{self.info.width},3], "
                f"got {tuple(frames.shape)}"
            )
        pts = chunk.pts.tolist()
        array = frames.detach().to("cpu").contiguous().numpy()
        tb = self.info.time_base
        for i, p in enumerate(pts):
            if self._last_pts is not None and p <= self._last_pts:
                raise VideoWriteError(
                    f"{self.dst}: frame {chunk.start_index + i} has pts {p}, not after the "
                    f"previous {self._last_pts}; timestamps must increase"
                )
            self._last_pts = p
            # the RGB frame wraps the array (no 6 MiB copy a 1080p frame) when it is converted at once
            rgb = (av.VideoFrame.from_numpy_buffer(array[i], format="rgb24") if self._pix_fmt != "rgb24"
                   else av.VideoFrame.from_ndarray(array[i], format="rgb24"))
            yuv = rgb.reformat(
                format=self._pix_fmt,
                dst_colorspace=self.info.colorspace,
                dst_color_range=self.info.color_range,
            )
            yuv.colorspace = self.info.colorspace
            yuv.color_range = self.info.color_range
            yuv.pts = int(p)
            yuv.time_base = tb
            self._encode(yuv)
            self.frames_written += 1

    def _encode(self, frame: Any) -> None:
        try:
            packets = self._video.encode(frame)
            for packet in packets:
                self._out.mux(packet)
                if packet.dts is not None and self._copy_iter is not None:
                    self._copy_until(float(packet.dts * packet.time_base) + _AUDIO_LEAD)
        except av.error.FFmpegError as exc:
            raise VideoWriteError(f"{self.dst}: encoding failed ({exc})") from exc

    def _copy_until(self, seconds: float | None) -> None:
        """Mux source audio/subtitle packets up to ``seconds`` (all of them for None)."""
        while True:
            packet = self._pending
            if packet is None:
                if self._copy_iter is None:
                    return
                try:
                    packet = next(self._copy_iter)
                except StopIteration:
                    self._copy_iter = None
                    return
                except av.error.FFmpegError as exc:
                    raise VideoWriteError(f"{self.source}: reading audio to copy failed ({exc})") from exc
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker, not data
            stamp = packet.dts if packet.dts is not None else packet.pts
            ts = stamp * packet.time_base if stamp is not None else None
            if seconds is not None and ts is not None and ts > seconds:
                self._pending = packet
                return
            self._pending = None
            packet.stream = self._copy_map[packet.stream.index]
            try:
                self._out.mux(packet)
            except av.error.FFmpegError as exc:
                raise VideoWriteError(
                    f"{self.dst}: copying a packet of {self.source} stream "
                    f"{packet.stream.index} failed ({exc})"
                ) from exc

    def close(self) -> None:
        """Flush the encoder, copy remaining audio, close and rename into place."""
        if self._done:
            return
        try:
            if self.frames_written == 0:
                raise VideoWriteError(f"{self.dst}: no frames were written; nothing to save")
            self._encode(None)
            self._copy_until(None)
            try:
                self._out.close()
            except av.error.FFmpegError as exc:
                raise VideoWriteError(f"{self.dst}: finishing the file failed ({exc})") from exc
            self._close_source()
            os.replace(self.temp, self.dst)
            self._done = True
            self._release_temp()
        except BaseException:
            self._abort()
            raise

    def _close_source(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def _abort(self) -> None:
        """Drop everything written so far; the destination is not touched."""
        self._done = True
        self._copy_iter = None
        self._pending = None
        try:
            self._out.close()
        except Exception as exc:  # the original error is what matters; keep a trace
            log.debug("closing the aborted output %s failed: %s", self.temp, exc)
        try:
            self._close_source()
        except Exception as exc:
            log.debug("closing source %s failed: %s", self.source, exc)
        self._remove_temp()

    def _hold_temp(self) -> None:
        """Create the temporary file (never through a planted file or link) and lock it while
        this writer lives: :func:`remove_leftovers` skips it; the muxer then writes into it."""
        self._lock_fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        _lock(self._lock_fd)

    def _release_temp(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_temp(self) -> None:
        try:
            self.temp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove temporary file %s: %s", self.temp, exc)
        self._release_temp()

