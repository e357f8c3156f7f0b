"""Detection while torch loads: a run's first frames decoded and detected before torch is there.

Most of a short run's start-up is ``import torch`` (1.5-2.7 s on the 2-core machine), and
the CenterFace detector needs none of it: onnxruntime, PyAV, OpenCV and numpy run it. So
while the CLI imports the pipeline, :class:`EarlyDetections` decodes, in a thread of its
own, the video's first frames and runs the detection cadence
(:class:`reenact.faces.cadence.DetectionCadence`) over them as the run is expected to
(:class:`EarlySchedule`: the defaults, guessed before the settings can be read, since
they live in modules that import torch). The detector's answers are kept, keyed by the
frame's content (a hash of its pixels) and the pass's scale.

When the run's pipeline is built, :meth:`EarlyDetections.serve` wraps its detector so that
a frame detected early is answered from what was kept, **only where the run's detector is
the one used early** (the same model file and settings: the early guess is checked, never
trusted) and only for the same pixels at the same scale. Everything else (a guess that was
wrong, a frame the cadence passes differently, a photo) is detected as before. So the
output is the same with or without it; only the time moves, into the import's wait. A run
whose pack would make the same detector takes the one made early (:attr:`EarlyDetections.detector`:
one onnxruntime session, opened once) where the early pass has ended when the pack is built
(a clip the import covers whole); otherwise the pass goes on detecting while the run plans
and loads, and the run opens its own session. Only frames in CPU memory are answered (a
run's frames on a GPU are resized there, by torch, not by OpenCV as early).

This module imports nothing that loads torch (``tests/faces/test_early.py`` checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reenact.allocator import release_free_memory
from reenact.faces.cadence import DetectionCadence
from reenact.faces.detect import (
    CenterFaceDetector,
    DetectorSettings,
    FaceDetections,
    FaceDetector,
    ThresholdedDetector,
)
from reenact.threads import current as thread_budget

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Most frames detected early (the import is over long before this on any machine measured;
#: the bound keeps a stalled import from decoding a whole long video into the cache).
MAX_EARLY_FRAMES = 500


@dataclass(frozen=True)
class EarlySchedule:
    """The detection a run is expected to make: the detector as the run loads it (``detector``:
    its load threshold, every face size), the run's score threshold and smallest face
    (``threshold``, ``drop_under``: applied after detection, as
    :class:`~reenact.faces.detect.ThresholdedDetector` does), the cadence's full-pass interval
    and shot-cut threshold (``full_every``, ``cut_threshold``; its ``light_scale`` and
    ``light_min_face`` are the detector's) and the chunks' bounds (``chunk_size`` frames,
    ``chunk_bytes``)."""

    detector: DetectorSettings
    threshold: float
    drop_under: float
    full_every: int
    cut_threshold: float
    chunk_size: int
    chunk_bytes: int

    def chunk_frames(self, width: int, height: int) -> int:
        """Frames per decoded chunk (as :meth:`reenact.io.reader.ReadSettings.frames_per_chunk`)."""
        return max(1, min(self.chunk_size, self.chunk_bytes // max(1, width * height * 3)))

    def cadence(self, detector: FaceDetector) -> DetectionCadence:
        """The cadence of this schedule over ``detector`` (the raw model: thresholds applied here)."""
        settings = self.detector
        return DetectionCadence(ThresholdedDetector(detector, self.threshold, self.drop_under), self.full_every,
                                settings.light_scale, self.cut_threshold, settings.light_min_face)


def frame_key(frame: torch.Tensor | np.ndarray) -> bytes:
    """A digest of one frame's pixels (uint8 [H,W,3], tensor or numpy): what identifies a frame
    detected early (16 bytes of BLAKE2b; about 1 ms for a 512x512 frame)."""
    array = np.ascontiguousarray(frame if isinstance(frame, np.ndarray) else frame.cpu().numpy())
    digest = hashlib.blake2b(array.data, digest_size=16)
    digest.update(repr((array.shape, array.dtype.str)).encode())  # same bytes, other shape: another frame
    return digest.digest()


class _Stop(Exception):
    """Raised by :class:`_Recorder` when the early pass is told to stop (between two frames)."""


class _Recorder:
    """A detector that keeps what it found in single frames: (frame key, scale) -> faces; it
    stops the pass (:class:`_Stop`) before a frame once ``until()`` is true."""

    def __init__(self, detector: CenterFaceDetector, until: Callable[[], bool]) -> None:
        self.detector = detector
        self.name = detector.name
        self.until = until
        self.found: dict[tuple[bytes, float], FaceDetections] = {}

    def input_scale(self, height: int, width: int) -> float:
        return self.detector.input_scale(height, width)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        if self.until():
            raise _Stop
        out = self.detector.detect(frames, scale, release)
        if len(out) == 1:
            self.found[(frame_key(frames[0]), scale)] = out[0]
        return out


class _Served:
    """A run's detector answering single frames detected early from the kept faces; every other
    call goes to the detector itself. While faces are kept, each call to the detector releases
    its working memory (``release``): a kept frame's call never does it in its place.

    Only frames in CPU memory are answered: the early pass resized on the CPU (OpenCV), and a
    detector given frames on a GPU resizes them there (torch), so its answers differ slightly.
    The kept faces are let go after ``2 * len(found) + LOOKUP_SLACK`` single-frame lookups
    (a run whose cadence differs from the early one's does not hash every frame to the end)."""

    #: lookups beyond twice the kept frames before the kept faces are let go
    LOOKUP_SLACK = 32

    def __init__(self, detector: FaceDetector, found: dict[tuple[bytes, float], FaceDetections]) -> None:
        self.detector = detector
        self.name = detector.name
        self.found = found
        self.hits = 0
        self.misses = 0
        self.lookups_left = 2 * len(found) + self.LOOKUP_SLACK

    def input_scale(self, height: int, width: int) -> float:
        return self.detector.input_scale(height, width)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Conventions: as :meth:`FaceDetector.detect`."""
        on_gpu = not isinstance(frames, np.ndarray) and getattr(frames.device, "type", "cpu") != "cpu"
        if self.found and (self.lookups_left <= 0 or on_gpu):
            self.found = {}  # another cadence, or frames on a GPU: the early answers are not the run's
        if not self.found:
            return self.detector.detect(frames, scale, release)
        if len(frames) == 1:
            self.lookups_left -= 1
            kept = self.found.pop((frame_key(frames[0]), scale), None)
            if kept is not None:
                self.hits += 1
                return [kept]
            self.misses += 1
        return self.detector.detect(frames, scale, True)


class EarlyDetections:
    """Frames of one video detected before the run's pipeline exists (module docstring).

    :meth:`run` decodes and detects in the calling thread; :meth:`start` does it in a thread of
    its own (a daemon: a process that ends, Ctrl-C or an error, never waits for it), until
    :meth:`stop`. :meth:`serve` stops it and hands what it found to the run's detector.
    ``frames``: how many frames were detected early.
    """

    def __init__(self, schedule: EarlySchedule) -> None:
        self.schedule = schedule
        self.frames = 0
        #: the detector used early (None until :meth:`run` has detected a frame): a run may take it
        self.detector: CenterFaceDetector | None = None
        self._model: tuple[Path, DetectorSettings] | None = None
        self._found: dict[tuple[bytes, float], FaceDetections] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval: float | None = None

    def start(self, path: str | Path, max_frames: int = MAX_EARLY_FRAMES,
              switch_interval: float | None = None) -> EarlyDetections:
        """:meth:`run` in a daemon thread, until :meth:`stop`; returns self. ``switch_interval``:
        the interpreter's thread switch interval (``sys.setswitchinterval``) while the thread
        runs, the previous one back at :meth:`stop` (the CLI's, measured there)."""
        if switch_interval is not None:
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(switch_interval)
        self._thread = threading.Thread(target=self.run, args=(path, self._stop.is_set, max_frames),
                                        name="reenact-early-detect", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread of :meth:`start` before its next frame and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            # what the thread freed in its own heap back to the system (measured, d0 blur: peak 875-895
            # MiB without, 853-861 with; 834-844 with no early pass)
            release_free_memory()
        if self._interval is not None:
            sys.setswitchinterval(self._interval)
            self._interval = None

    def run(self, path: str | Path, until: Callable[[], bool], max_frames: int = MAX_EARLY_FRAMES) -> None:
        """Decode ``path`` from its start and detect frame after frame until ``until()`` is true
        (checked before each frame), the video ends or ``max_frames`` are done.

        Never raises for the video or the model (a file the run will refuse, a decoder or
        model error): it stops, keeps what it found, and the run meets the problem itself
        with its own error.
        """
        import av

        recorder: _Recorder | None = None
        try:
            recorder = _Recorder(CenterFaceDetector(None, self.schedule.detector), until)
            cadence = self.schedule.cadence(recorder)
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.thread_count = thread_budget().decoder
                size = self.schedule.chunk_frames(stream.codec_context.width, stream.codec_context.height)
                chunk: list[np.ndarray] = []
                for frame in container.decode(stream):
                    chunk.append(frame.to_ndarray(format="rgb24"))
                    if len(chunk) == size:
                        cadence.detect(np.stack(chunk))
                        self.frames += len(chunk)
                        chunk = []
                        if until() or self.frames >= max_frames:
                            break
                else:
                    if chunk:
                        cadence.detect(np.stack(chunk))
                        self.frames += len(chunk)
        except _Stop:
            pass
        except Exception as exc:  # the run itself reports what is wrong with the file or model
            log.debug("early detection stopped after %d frames: %s: %s", self.frames, type(exc).__name__, exc)
        if recorder is None or not recorder.found:
            return
        with contextlib.suppress(Exception):  # stopped inside a chunk: its working memory is not held on
            recorder.detector.release()
        self.frames = len(recorder.found)
        self._model = (recorder.detector.model_path, recorder.detector.settings)
        self._found = recorder.found
        self.detector = recorder.detector

    def serve(self, detector: FaceDetector) -> FaceDetector:
        """``detector`` (a run's, maybe a :class:`ThresholdedDetector`) answering the frames detected
        early from what was kept, when its model is the one used early (the same file, the same
        settings); otherwise ``detector`` itself, and what was kept is let go. Stops the
        thread of :meth:`start` first."""
        self.stop()
        found, self._found = self._found, {}
        return self._wrap(detector, found)

    def _wrap(self, detector: FaceDetector, found: dict[tuple[bytes, float], FaceDetections]) -> FaceDetector:
        if isinstance(detector, ThresholdedDetector):
            return ThresholdedDetector(self._wrap(detector.detector, found), detector.score_threshold,
                                       detector.min_face_size)
        if (found and isinstance(detector, CenterFaceDetector) and self._model is not None
                and (detector.model_path, detector.settings) == self._model):
            return _Served(detector, found)
        return detector
