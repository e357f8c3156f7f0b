"""Evaluate an output video against its input: detection, identity and landmarks on both,
frame pairs matched by timestamp, and the JSON report of :mod:`reenact.evaluate.metrics`.

The evaluation streams both videos (memory depends on the chunk size and resolution,
not on the length). Faces are found in the input and tracked (greedy box overlap);
each input face is matched to the output face that overlaps it most. Where no output
face is detected, the output is measured at the input face's position (a face that was
blurred or destroyed still has a place), and the report counts how often that happened;
such a face counts as neither re-identified nor carrying the target identity.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reenact.config import MODES, Mode
from reenact.errors import ConfigError, InputError, NoFaceError, OutputExistsError, VideoReadError
from reenact.evaluate import metrics as M
from reenact.faces.boxes import box_iou, match_boxes
from reenact.faces.privacy_thresholds import OPERATING_POINTS, operating_point

log = logging.getLogger(__name__)

REPORT_VERSION = 1


class Detector(Protocol):
    """What the evaluation needs of a face detector (see :mod:`reenact.faces.detect`)."""

    name: str

    def detect(self, frames: Any) -> list[Any]:
        """One ``FaceDetections`` (boxes [N,4], points [N,5,2], scores [N]) per frame."""
        ...


class IdentityEncoder(Protocol):
    """What the evaluation needs of an identity encoder (see :mod:`reenact.faces.identity`)."""

    @property
    def name(self) -> str: ...

    def embed(self, frames: Any, frame_index: Any, points: Any) -> Any:
        """Unit embeddings ``[F,D]`` of the faces at 5 ``points`` ``[F,5,2]`` in ``frames``."""
        ...


class LandmarkModel(Protocol):
    """What the evaluation needs of a 68-point landmark model (see :mod:`reenact.faces.landmarks`)."""

    @property
    def name(self) -> str: ...

    def detect(self, frames: Any, frame_index: Any, boxes: Any) -> np.ndarray:
        """68 points ``[F,68,2]`` (frame pixels) of the faces in ``boxes`` ``[F,4]``."""
        ...


@dataclass(frozen=True)
class EvalSettings:
    """Settings of ``reenact eval``.

    ``max_frames``: evaluate only the first N input frames (None: all). ``match_iou``:
    box overlap needed to link a face to a track and to match input and output faces.
    ``track_max_gap``: frames a track may miss before it ends. ``reid_threshold``: an
    output face whose cosine similarity to its original person is at least this counts as
    re-identified; None takes the identity encoder's attacker operating point on its own
    chip, the one ``deidentify``'s privacy check uses
    (:data:`reenact.faces.privacy_thresholds.OPERATING_POINTS`; the scale differs per model:
    never reuse one across models).
    ``mask_margin``: face boxes grow by this share of their size before they are cut out
    of the background PSNR. ``flicker_crop``: side of the aligned crop used for flicker.
    ``min_overlap``: share of the evaluated input frames that must find an output frame at
    the same time, else the pair is refused. ``worst_frames``: how many of the most
    re-identifiable output faces the privacy section lists.
    """

    mode: Mode = "deidentify"
    max_frames: int | None = None
    chunk_size: int = 8
    match_iou: float = 0.3
    track_max_gap: int = 5
    reid_threshold: float | None = None
    mask_margin: float = 0.25
    flicker_crop: int = 64
    psnr_cap_db: float = M.PSNR_CAP_DB
    min_overlap: float = 0.5
    worst_frames: int = 10

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be 'reenact' or 'deidentify', got {self.mode!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 (or None for all), got {self.max_frames}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        for name in ("match_iou", "min_overlap"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.reid_threshold is not None and not -1.0 <= self.reid_threshold <= 1.0:
            raise ConfigError(f"reid_threshold is a cosine similarity in [-1, 1], got {self.reid_threshold}")
        if self.flicker_crop < 16:
            raise ConfigError(f"flicker_crop must be >= 16 pixels, got {self.flicker_crop}")
        if self.track_max_gap < 0 or self.worst_frames < 0 or self.mask_margin < 0:
            raise ConfigError("track_max_gap, worst_frames and mask_margin must be >= 0")


#: Default re-identification thresholds (cosine similarity) per identity encoder name: the
#: attacker's operating point of each model on its own (``tight``) chip, the chip ``eval``
#: embeds with: the same numbers ``deidentify``'s privacy check decides with, so ``eval``
#: never calls a face re-identified that the check passed below that point, or the reverse.
REID_THRESHOLDS: dict[str, float] = {name: points["tight"].threshold for name, points in OPERATING_POINTS.items()}


def reid_threshold_for(identity: Any, settings: EvalSettings) -> tuple[float, str]:
    """The threshold to use with ``identity`` and where it came from."""
    if settings.reid_threshold is not None:
        return settings.reid_threshold, "set by the user"
    name = str(getattr(identity, "name", ""))
    if name not in OPERATING_POINTS:
        raise ConfigError(
            f"no default re-identification threshold for identity model {name!r}; pass --reid-threshold "
            f"(the cosine similarity above which two faces are the same person for this model), "
            f"known defaults: {REID_THRESHOLDS}"
        )
    point = operating_point(name, "tight")
    return point.threshold, f"{name}'s operating point on its own chip, as deidentify's check: {point.provenance}"


# --- reading both videos, paired by timestamp ---------------------------------------------


@dataclass
class _Stream:
    path: Path
    fps: float
    width: int
    height: int
    frame_count: int


def _open(path: Path, chunk_size: int) -> Any:
    from reenact.io.reader import open_video

    return open_video(path, chunk_size=chunk_size)


def _frames(reader: Any) -> Iterator[tuple[int, float, torch.Tensor]]:
    """(index, seconds since the first frame, frame [H,W,3]) of a reader's chunks."""
    tb = float(reader.info.time_base)
    first: int | None = None
    for chunk in reader:
        for i in range(len(chunk)):
            pts = int(chunk.pts[i])
            if first is None:
                first = pts
            yield chunk.start_index + i, (pts - first) * tb, chunk.frames[i]


def _paired(
    inp: Iterator[tuple[int, float, torch.Tensor]],
    out: Iterator[tuple[int, float, torch.Tensor]],
    tol: float,
    max_frames: int | None,
    counts: dict[str, int],
) -> Iterator[tuple[int, int, float, torch.Tensor, torch.Tensor]]:
    """Pair each input frame with the output frame nearest in time (within ``tol`` s)."""
    cur = next(out, None)
    nxt = next(out, None) if cur is not None else None
    for idx, t, frame in inp:
        if max_frames is not None and idx >= max_frames:
            break
        counts["input_frames"] += 1
        # advance while the next output frame is at least as near to t
        while nxt is not None and abs(nxt[1] - t) <= abs(cur[1] - t):  # type: ignore[index]
            cur, nxt = nxt, next(out, None)
        if cur is not None and abs(cur[1] - t) <= tol:
            counts["paired"] += 1
            yield idx, cur[0], t, frame, cur[2]


# --- tracking and matching ----------------------------------------------------------------


class _Tracker:
    """Greedy IoU tracker over the input's detections."""

    def __init__(self, iou: float, max_gap: int) -> None:
        self.iou = iou
        self.max_gap = max_gap
        self.active: dict[int, tuple[int, np.ndarray]] = {}  # id -> (last seq, box)
        self.next_id = 0

    def update(self, seq: int, boxes: np.ndarray) -> list[int]:
        ids = sorted(self.active)
        last = np.array([self.active[i][1] for i in ids]).reshape(-1, 4)
        assigned = [-1] * len(boxes)
        for r, c in match_boxes(box_iou(boxes, last), self.iou):
            assigned[r] = ids[c]
        for r, tid in enumerate(assigned):
            if tid < 0:
                tid = self.next_id
                self.next_id += 1
                assigned[r] = tid
            self.active[tid] = (seq, boxes[r])
        for tid in list(self.active):
            if seq - self.active[tid][0] > self.max_gap:
                del self.active[tid]
        return assigned


# --- per-face measurements ----------------------------------------------------------------


@dataclass
class _Track:
    seq: list[int] = field(default_factory=list)  # index among evaluated pairs
    frame: list[int] = field(default_factory=list)  # input frame index
    out_frame: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    out_detected: list[bool] = field(default_factory=list)
    emb_in: list[np.ndarray] = field(default_factory=list)
    emb_out: list[np.ndarray] = field(default_factory=list)
    lm_in: list[np.ndarray] = field(default_factory=list)
    lm_out: list[np.ndarray] = field(default_factory=list)
    flicker_in: list[float] = field(default_factory=list)
    flicker_out: list[float] = field(default_factory=list)
    last_crop: tuple[int, torch.Tensor, torch.Tensor] | None = None


def _runs(seq: list[int]) -> list[slice]:
    """Slices of consecutive sequence numbers."""
    out: list[slice] = []
    start = 0
    for i in range(1, len(seq) + 1):
        if i == len(seq) or seq[i] != seq[i - 1] + 1:
            out.append(slice(start, i))
            start = i
    return out


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return np.asarray(x.detach().cpu().numpy(), dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def _embed_image(image: Any, detector: Detector, encoder: IdentityEncoder) -> np.ndarray:
    """Unit embedding ``[D]`` of the largest face in an image path or uint8 ``[H,W,3]`` array."""
    from reenact.faces.identity import identity_from_photo

    photo = identity_from_photo(image, detector, encoder)  # type: ignore[arg-type]
    emb = _np(photo.embedding).reshape(-1)
    return np.asarray(emb / np.linalg.norm(emb))


def model_name(model: Any) -> str:
    """``name:file`` of a model (plus the input normalisation of ONNX identity models), so
    that numbers measured with different model files are never mixed up."""
    name = str(getattr(model, "name", type(model).__name__))
    path = getattr(model, "path", None) or getattr(model, "model_path", None)
    if path is not None and Path(path).name not in name:
        name += f":{Path(path).name}"
    if hasattr(model, "input_mean") and hasattr(model, "input_std"):
        name += f" (mean {model.input_mean:g}, std {model.input_std:g})"
    return name


def _stream_info(reader: Any, path: Path) -> _Stream:
    info = reader.info
    return _Stream(path, float(info.avg_fps or info.real_fps or 0.0), int(info.width), int(info.height),
                   int(info.frame_count))


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _clean(obj: Any) -> Any:
    """JSON-safe data: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return _finite(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def evaluate_videos(
    input_path: str | Path,
    output_path: str | Path,
    detector: Detector,
    identity: IdentityEncoder,
    landmarks: LandmarkModel,
    identity_image: Any = None,
    settings: EvalSettings = EvalSettings(),
    distractors: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Measure OUTPUT against INPUT and return the report (JSON-ready dict).

    ``identity_image`` is the target identity of a reenactment; it is required in
    ``reenact`` mode. ``distractors`` are photos of other people (the largest face of
    each) added to the identity gallery, so that "the nearest identity is the original
    person" means something for a one-person video too. Frames of the two videos are
    paired by timestamp (seconds since each video's first frame).

    Conventions:
        ``identity_image``: a path, or uint8 ``[H,W,3]`` RGB. The report's points, boxes
        and frame indices refer to the input video's frames (pixels, 0-based); angles in
        degrees; similarities are cosines; PSNR in dB, capped at ``settings.psnr_cap_db``.

    Raises :class:`VideoReadError` for unreadable files, :class:`InputError` when the
    videos differ in size or barely overlap in time, :class:`NoFaceError` when the
    input has no face to evaluate.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    threshold, threshold_source = reid_threshold_for(identity, settings)
    if settings.mode == "reenact" and identity_image is None:
        raise InputError("reenact mode measures identity transfer and needs the target face: pass --identity FACE")
    target = _embed_image(identity_image, detector, identity) if identity_image is not None else None
    extra = np.stack([_embed_image(p, detector, identity) for p in distractors]) if distractors else None

    warnings: list[str] = []
    with _open(input_path, settings.chunk_size) as rin, _open(output_path, settings.chunk_size) as rout:
        sin, sout = _stream_info(rin, input_path), _stream_info(rout, output_path)
        if (sin.width, sin.height) != (sout.width, sout.height):
            raise InputError(
                f"{output_path} is {sout.width}x{sout.height} but {input_path} is {sin.width}x{sin.height}; "
                "faces can only be compared at the same frame size (re-export the output at the input's size)"
            )
        if sin.fps <= 0 or sout.fps <= 0:
            raise VideoReadError(f"cannot tell the frame rate of {input_path if sin.fps <= 0 else output_path}")
        if abs(sin.fps - sout.fps) > 0.01 * sin.fps:
            warnings.append(
                f"frame rates differ ({sin.fps:.3f} vs {sout.fps:.3f} fps): frames paired by nearest timestamp"
            )
        _check_overlap(rin.info, rout.info, input_path, output_path, settings)
        tol = 0.5 / min(sin.fps, sout.fps) + 1e-3
        counts = {"input_frames": 0, "paired": 0}
        pairs = _paired(_frames(rin), _frames(rout), tol, settings.max_frames, counts)
        tracks, psnr_sq, psnr_n, frame_psnr, seq_total, out_face_frames = _measure(
            pairs, detector, identity, landmarks, settings
        )

    if counts["input_frames"] == 0:
        raise VideoReadError(f"{input_path} has no frames to evaluate")
    overlap = counts["paired"] / counts["input_frames"]
    if overlap < settings.min_overlap:
        raise InputError(
            f"only {counts['paired']} of {counts['input_frames']} input frames have an output frame at the same "
            f"time ({input_path}: {sin.frame_count} frames at {sin.fps:.3f} fps, {output_path}: {sout.frame_count} "
            f"frames at {sout.fps:.3f} fps); are these the input and output of one run?"
        )
    if counts["paired"] < counts["input_frames"]:
        warnings.append(
            f"{counts['input_frames'] - counts['paired']} input frames have no output frame at their time "
            "(the videos differ in length): only the overlap is evaluated"
        )
    if not tracks:
        raise NoFaceError(
            f"detector {detector.name} found no face in the {seq_total} evaluated frames of {input_path}; "
            "nothing to evaluate"
        )
    if out_face_frames == 0:
        warnings.append(
            f"detector {detector.name} found no face in any evaluated frame of {output_path}: the output is "
            "measured at the input's face positions"
        )
    for w in warnings:
        log.warning(w)

    return _clean(
        _build_report(
            input_path, output_path, sin, sout, counts, tracks, target, detector, identity, landmarks,
            settings, psnr_sq, psnr_n, frame_psnr, warnings, identity_image, extra, (threshold, threshold_source),
        )
    )


def _check_overlap(info_in: Any, info_out: Any, input_path: Path, output_path: Path, settings: EvalSettings) -> None:
    """Refuse early, from the containers' durations, a pair that cannot overlap enough."""
    dur_in, dur_out = float(info_in.duration or 0.0), float(info_out.duration or 0.0)
    if dur_in <= 0 or dur_out <= 0:
        return  # unknown: the frame-by-frame pairing decides
    if settings.max_frames is not None and info_in.avg_fps:
        dur_in = min(dur_in, settings.max_frames / float(info_in.avg_fps))
    if min(dur_in, dur_out) / dur_in < settings.min_overlap:
        raise InputError(
            f"{output_path} lasts {dur_out:.2f} s ({info_out.frame_count} frames at {info_out.avg_fps:.3f} fps) but "
            f"{dur_in:.2f} s of {input_path} ({info_in.frame_count} frames at {info_in.avg_fps:.3f} fps) are to be "
            f"evaluated: less than {settings.min_overlap:.0%} overlap; are these the input and output of one run?"
        )


def save_report(report: dict[str, Any], out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``report.json``, ``per_frame.png`` and ``summary.png`` into ``out_dir``.

    Raises :class:`OutputExistsError` when a report is already there and ``overwrite`` is
    false. The JSON is written to a temporary file and renamed into place.
    """
    from reenact.evaluate.plots import plot_per_frame, plot_summary

    out = Path(out_dir)
    paths = {"report": out / "report.json", "per_frame": out / "per_frame.png", "summary": out / "summary.png"}
    if not overwrite and paths["report"].exists():
        raise OutputExistsError(f"{paths['report']} exists; pass --overwrite or choose another --out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = paths["report"].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        plot_per_frame(report, paths["per_frame"])
        plot_summary(report, paths["summary"])
        tmp.replace(paths["report"])
    except OSError as exc:
        raise InputError(f"cannot write the evaluation report to {out}: {exc.strerror or exc}") from exc
    return paths


def _embed(identity: IdentityEncoder, frames: torch.Tensor, local: torch.Tensor, pts: torch.Tensor) -> np.ndarray:
    """Embeddings ``[F,D]``, a few faces per call (encoders warp from whole float frames)."""
    parts = [_np(identity.embed(frames, local[i : i + 4], pts[i : i + 4])) for i in range(0, len(local), 4)]
    return np.concatenate(parts)


def _measure(
    pairs: Iterator[tuple[int, int, float, torch.Tensor, torch.Tensor]],
    detector: Detector,
    identity: IdentityEncoder,
    landmarks: LandmarkModel,
    settings: EvalSettings,
) -> tuple[dict[int, _Track], float, int, list[tuple[int, float]], int, int]:
    from reenact.faces.align import arcface_template, similarity_from_points, warp_to_crop

    tracker = _Tracker(settings.match_iou, settings.track_max_gap)
    tracks: dict[int, _Track] = {}
    template = arcface_template(settings.flicker_crop)
    psnr_sq, psnr_n = 0.0, 0
    frame_psnr: list[tuple[int, float]] = []
    seq = 0
    out_face_frames = 0
    batch: list[tuple[int, int, float, torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        nonlocal seq, psnr_sq, psnr_n, out_face_frames
        fin = torch.stack([b[3] for b in batch])
        fout = torch.stack([b[4] for b in batch])
        dets_in = detector.detect(fin)
        dets_out = detector.detect(fout)
        rows: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]] = []
        for j, (idx, _oidx, _t, a, b) in enumerate(batch):
            bi, pi = _np(dets_in[j].boxes).reshape(-1, 4), _np(dets_in[j].points).reshape(-1, 5, 2)
            bo, po = _np(dets_out[j].boxes).reshape(-1, 4), _np(dets_out[j].points).reshape(-1, 5, 2)
            out_face_frames += int(len(bo) > 0)
            ids = tracker.update(seq + j, bi)
            match = dict(match_boxes(box_iou(bi, bo), settings.match_iou))
            for r, tid in enumerate(ids):
                c = match.get(r)
                if c is None:
                    rows.append((j, tid, bi[r], pi[r], bi[r], pi[r], False))
                else:
                    rows.append((j, tid, bi[r], pi[r], bo[c], po[c], True))
            exclude = M.box_mask(a.shape[0], a.shape[1], np.concatenate([bi, bo]), settings.mask_margin)
            sq, n = M.masked_mse(a, b, exclude)
            psnr_sq += sq
            psnr_n += n
            frame_psnr.append((idx, M.psnr_from_mse(sq, n, settings.psnr_cap_db)))
        if rows:
            local = torch.tensor([r[0] for r in rows], dtype=torch.long)
            box_in = np.stack([r[2] for r in rows])
            pts_in = torch.as_tensor(np.stack([r[3] for r in rows]), dtype=torch.float32)
            box_out = np.stack([r[4] for r in rows])
            pts_out = torch.as_tensor(np.stack([r[5] for r in rows]), dtype=torch.float32)
            e_in = _embed(identity, fin, local, pts_in)
            e_out = _embed(identity, fout, local, pts_out)
            l_in = np.asarray(landmarks.detect(fin, local, box_in), dtype=np.float64)
            l_out = np.asarray(landmarks.detect(fout, local, box_out), dtype=np.float64)
            # few faces per warp: each converts its whole frame to float
            c_in = warp_to_crop(fin, local, similarity_from_points(pts_in, template), settings.flicker_crop, chunk=4)
            c_out = warp_to_crop(fout, local, similarity_from_points(pts_out, template), settings.flicker_crop, chunk=4)
            for k, (j, tid, *_rest, detected) in enumerate(rows):
                tr = tracks.setdefault(tid, _Track())
                s = seq + j
                if tr.last_crop is not None and tr.last_crop[0] == s - 1:
                    tr.flicker_in.append(float(M.flicker(torch.stack([tr.last_crop[1], c_in[k]]))[0]))
                    tr.flicker_out.append(float(M.flicker(torch.stack([tr.last_crop[2], c_out[k]]))[0]))
                tr.last_crop = (s, c_in[k].clone(), c_out[k].clone())
                tr.seq.append(s)
                tr.frame.append(batch[j][0])
                tr.out_frame.append(batch[j][1])
                tr.time.append(batch[j][2])
                tr.out_detected.append(detected)
                tr.emb_in.append(e_in[k])
                tr.emb_out.append(e_out[k])
                tr.lm_in.append(l_in[k])
                tr.lm_out.append(l_out[k])
        seq += len(batch)
        batch.clear()

    for item in pairs:
        batch.append(item)
        if len(batch) >= settings.chunk_size:
            flush()
    if batch:
        flush()
    return tracks, psnr_sq, psnr_n, frame_psnr, seq, out_face_frames


def _build_report(
    input_path: Path,
    output_path: Path,
    sin: _Stream,
    sout: _Stream,
    counts: dict[str, int],
    tracks: dict[int, _Track],
    target: np.ndarray | None,
    detector: Detector,
    identity: IdentityEncoder,
    landmarks: LandmarkModel,
    settings: EvalSettings,
    psnr_sq: float,
    psnr_n: int,
    frame_psnr: list[tuple[int, float]],
    warnings: list[str],
    identity_image: Any,
    extra: np.ndarray | None = None,
    reid_rule: tuple[float, str] = (0.35, "set by the user"),
) -> dict[str, Any]:
    ids = sorted(tracks)
    threshold, threshold_source = reid_rule
    background_db = M.psnr_from_mse(psnr_sq, psnr_n, settings.psnr_cap_db)
    if math.isfinite(background_db) and background_db < 20.0:
        warnings.append(
            f"background PSNR is {background_db:.1f} dB: the output does not look like a processed copy of the "
            "input (another video, another cut, or a different crop); the comparison may be meaningless"
        )
        log.warning(warnings[-1])
    people = np.stack([M._unit(np.mean(M._check_embeddings(np.stack(tracks[t].emb_in), "e"), 0), "g") for t in ids])
    gallery = people if extra is None else np.concatenate([people, extra])  # input's people first
    n_gallery = gallery.shape[0]
    det_name, id_name, lm_name = model_name(detector), model_name(identity), model_name(landmarks)
    models = {"detector": det_name, "identity": id_name, "landmarks": lm_name}
    per_track: list[dict[str, Any]] = []
    all_: dict[str, list[Any]] = {k: [] for k in (
        "sim_orig", "reid", "sim_target", "retrieved", "pose", "expr", "jit_in", "jit_out",
        "flk_in", "flk_out", "tl_in", "tl_out", "detected")}
    tg_in: list[tuple[float, int]] = []
    tg_out: list[tuple[float, int]] = []
    worst: list[dict[str, Any]] = []
    for gi, tid in enumerate(ids):
        tr = tracks[tid]
        e_in, e_out = np.stack(tr.emb_in), np.stack(tr.emb_out)
        l_in, l_out = np.stack(tr.lm_in), np.stack(tr.lm_out)
        detected = np.asarray(tr.out_detected, dtype=bool)
        sim_orig = M.identity_similarity(e_out, gallery[gi])
        reid = sim_orig >= threshold
        if n_gallery >= 2:
            reid |= M.nearest_is(e_out, gallery, gi)
        # a face the detector cannot find in the output is not recognised by this pipeline
        # (embeddings of face-less patches are encoder bias, not identity)
        reid &= detected
        pose_in, pose_out = M.head_pose(l_in), M.head_pose(l_out)
        perr = M.pose_error(pose_in, pose_out)
        expr = M.expression_error(l_in, l_out)
        iod = M.interocular(l_in)
        tl_in = np.concatenate([M.adjacent_similarity(e_in[r]) for r in _runs(tr.seq)] + [np.zeros(0)])
        tl_out = np.concatenate([M.adjacent_similarity(e_out[r]) for r in _runs(tr.seq)] + [np.zeros(0)])
        jit_in = np.concatenate([M.landmark_jitter(l_in[r], iod[r]) for r in _runs(tr.seq)] + [np.zeros(0)])
        jit_out = np.concatenate([M.landmark_jitter(l_out[r], iod[r]) for r in _runs(tr.seq)] + [np.zeros(0)])
        tgi, tgo = M.global_identity_consistency(e_in), M.global_identity_consistency(e_out)
        if math.isfinite(tgi):
            tg_in.append((tgi, len(tr.seq)))
            tg_out.append((tgo, len(tr.seq)))
        entry: dict[str, Any] = {
            "track": tid,
            "frames": tr.frame,
            "output_frames": tr.out_frame,
            "time_s": tr.time,
            "output_face_detected": tr.out_detected,
            "similarity_to_original": sim_orig,
            "reidentified": reid,
            "reidentification_rate": float(reid.mean()),
            "pose_input_deg": pose_in,
            "pose_output_deg": pose_out,
            "pose_error_deg": perr,
            "expression_error": expr,
            "tl_id": {"input": _mean(tl_in), "output": _mean(tl_out)},
            "tg_id": {"input": tgi, "output": tgo},
            "landmark_jitter": {"input": _mean(jit_in), "output": _mean(jit_out)},
            "flicker": {"input": _mean(tr.flicker_in), "output": _mean(tr.flicker_out),
                        "output_per_frame": tr.flicker_out, "input_per_frame": tr.flicker_in},
        }
        if target is not None:
            sim_t = M.identity_similarity(e_out, target)
            retrieved = M.nearest_is(e_out, np.concatenate([gallery, target[None]]), n_gallery) & detected
            entry["similarity_to_target"] = sim_t
            entry["target_retrieved"] = retrieved
            all_["sim_target"].append(sim_t)
            all_["retrieved"].append(retrieved)
        per_track.append(entry)
        all_["sim_orig"].append(sim_orig)
        all_["reid"].append(reid)
        all_["pose"].append(perr)
        all_["expr"].append(expr)
        all_["jit_in"].append(jit_in)
        all_["jit_out"].append(jit_out)
        all_["flk_in"].append(np.asarray(tr.flicker_in))
        all_["flk_out"].append(np.asarray(tr.flicker_out))
        all_["tl_in"].append(tl_in)
        all_["tl_out"].append(tl_out)
        all_["detected"].append(np.asarray(tr.out_detected))
        for k in range(len(tr.seq)):
            worst.append({"frame": tr.frame[k], "track": tid, "similarity_to_original": float(sim_orig[k]),
                          "reidentified": bool(reid[k])})

    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in all_.items()}
    pose = np.concatenate(all_["pose"]) if all_["pose"] else np.zeros((0, 3))
    worst.sort(key=lambda w: -w["similarity_to_original"])
    tl_in_m, tl_out_m = _mean(cat["tl_in"]), _mean(cat["tl_out"])
    tg_in_m = _wmean(tg_in)
    tg_out_m = _wmean(tg_out)
    flk_in, flk_out = _mean(cat["flk_in"]), _mean(cat["flk_out"])
    summary: dict[str, Any] = {
        "faces_evaluated": int(cat["reid"].size),
        "output_face_detected_rate": _mean(cat["detected"].astype(float)),
        "attributes": {
            "models": {"landmarks": lm_name, "detector": det_name,
                       "pose": "scaled-orthographic fit of the 68 landmarks to insightface's 3D mean face"},
            "pose_error_deg": {
                "yaw": M.summarize(pose[:, 0]), "pitch": M.summarize(pose[:, 1]),
                "roll": M.summarize(pose[:, 2]), "mean_abs": M.summarize(pose.mean(1) if pose.size else pose),
            },
            "expression_error": M.summarize(cat["expr"]),
        },
        "temporal": {
            "models": {"identity": id_name, "landmarks": lm_name, "detector": det_name},
            "tl_id": {"input": tl_in_m, "output": tl_out_m, "ratio": _ratio(tl_out_m, tl_in_m)},
            "tg_id": {"input": tg_in_m, "output": tg_out_m, "ratio": _ratio(tg_out_m, tg_in_m)},
            "landmark_jitter": {"input": _mean(cat["jit_in"]), "output": _mean(cat["jit_out"]),
                                "unit": "mean point acceleration / inter-ocular distance"},
            "flicker": {"input": flk_in, "output": flk_out, "excess": _diff(flk_out, flk_in),
                        "unit": "mean |change| in 8-bit levels inside the aligned face, per frame"},
        },
        "privacy": {
            "models": {"identity": id_name, "detector": det_name},
            "reidentification_rate": _mean(cat["reid"].astype(float)),
            "threshold": threshold,
            "threshold_source": threshold_source,
            "gallery_size": n_gallery,
            "distractors": 0 if extra is None else int(extra.shape[0]),
            "rule": "output face detected, and: similarity to the original person >= threshold"
                    + (", or the original person is the nearest identity of the gallery (the input's people"
                       " and the distractor photos)" if n_gallery >= 2 else
                       " (a gallery of one: the nearest-identity rule needs two or more; add --gallery photos)"),
            "mean_similarity_to_original": _mean(cat["sim_orig"]),
            "per_track": {str(t["track"]): t["reidentification_rate"] for t in per_track},
            "worst_frames": worst[: settings.worst_frames],
        },
        "background": {
            "psnr_db": background_db,
            "min_frame_psnr_db": min((p for _, p in frame_psnr if math.isfinite(p)), default=math.nan),
            "cap_db": settings.psnr_cap_db,
            "mask": f"face boxes of both videos grown by {settings.mask_margin:.0%} of their size",
        },
    }
    if target is not None:
        summary["identity"] = {
            "models": {"identity": id_name, "detector": det_name},
            "target": str(identity_image) if isinstance(identity_image, (str, Path)) else "array",
            "similarity_to_target": M.summarize(cat["sim_target"]),
            "retrieval_rate": _mean(cat["retrieved"].astype(float)),
            "retrieval_rule": "output face detected and the target is the nearest identity of the gallery "
                              "(the input's people, the distractor photos and the target)",
            "gallery_size": n_gallery + 1,
        }
    return {
        "version": REPORT_VERSION,
        "mode": settings.mode,
        "input": str(input_path),
        "output": str(output_path),
        "models": models,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "alignment": {
            "method": "nearest timestamp (seconds since each video's first frame)",
            "input_fps": sin.fps, "output_fps": sout.fps,
            "input_frame_count": sin.frame_count, "output_frame_count": sout.frame_count,
            "input_frames_evaluated": counts["input_frames"], "pairs": counts["paired"],
        },
        "summary": summary,
        "background_per_frame": [{"frame": f, "psnr_db": p} for f, p in frame_psnr],
        "tracks": per_track,
        "warnings": warnings,
    }


def _mean(x: Any) -> float:
    arr = np.asarray(x, dtype=np.float64).ravel()
    return float(arr.mean()) if arr.size else math.nan


def _wmean(items: list[tuple[float, int]]) -> float:
    if not items:
        return math.nan
    v = np.array([a for a, _ in items])
    w = np.array([b for _, b in items], dtype=np.float64)
    return float((v * w).sum() / w.sum())


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def _diff(a: float, b: float) -> float:
    return a - b if math.isfinite(a) and math.isfinite(b) else math.nan
