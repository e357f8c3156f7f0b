"""The output privacy check, the escalation ladder and fail-closed redaction.

* :func:`check_identities`: (reenact) every replaced face is compared with the target and
  the similarity reported; nothing is redacted.
* :func:`untracked_faces`: detections that no released track covers (fail-closed modes).
* :class:`PrivacyGuard` (deidentify): checks what an attacker would see. On the final
  composited frame every output face is embedded by every :class:`Checker` (each identity
  model the run has, dlib's descriptor always among them, times the ``tight`` and ``loose``
  chip) and compared with the same model+chip's embedding of the original face in the input
  frame (embedded per frame, batched). A face passes only when every checker sees it below
  its privacy threshold. A face that fails climbs its track's ladder, and a track starts its
  next frames on the rung it reached (no flicker back to a weaker rung):

  ``synthetic`` (the rendered synthetic identity) -> ``redraw`` (another synthetic identity,
  at most ``deidentify.redraws`` per track) -> ``grown_mask`` (the face pasted with a mask
  grown to forehead and jaw) -> ``pixelate``/``blur`` of the head box (the face box grown to
  include hair), re-checked -> ``solid`` (a solid fill of the head box: the last rung, which
  leaves nothing to check). ``--method blur|pixelate|solid`` start on the box rung.
  Faces that could not be synthesized (no identity, refused by the blender, outside the
  frame, untracked) start on the box rung; a face whose check raises goes to ``solid``.

Conventions: frames uint8 ``[T,H,W,3]`` (``[H,W,3]`` for the box redactions) RGB; boxes
float ``[N,4]`` (x1, y1, x2, y2) and points ``[N,5,2]`` frame pixels; embeddings float
``[F,D]`` unit rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from reenact.errors import ShapeError
from reenact.faces import FaceDetections, cosine_similarity
from reenact.faces.boxes import box_iou
from reenact.faces.identity import DlibFaceEncoder, IdentityEncoder
from reenact.faces.privacy_thresholds import (
    CHIPS,
    PRIVACY_THRESHOLDS,
    Chip,
    embed_with_chip,
    privacy_threshold,
)
from reenact.pipeline.identity import IdentityPolicy, TrackIdentity
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord, FrameSlot

log = logging.getLogger(__name__)

Embed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""frames uint8 [T,H,W,3], frame index long [F], points float [F,5,2] -> codes float [F,D]."""

COVER_IOU = 0.3
"""A detection overlapping a released track's box by more than this IoU counts as covered."""


def blur_boxes(frame: torch.Tensor, boxes: torch.Tensor, margin: float = 0.25, cells: int = 8) -> torch.Tensor:
    """Return ``frame`` with each box (grown by ``margin`` of its size) made unrecognisable.

    The region is pixelated to at most ``cells`` x ``cells`` blocks of at least 6 px (so small
    faces get fewer, coarser blocks) and then blurred, which removes the detail face
    recognisers need while keeping the scene's colours. Boxes are clipped to the frame; the
    input tensor is not modified.
    """
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ShapeError(f"frame must be uint8 [H,W,3], got {frame.dtype} {tuple(frame.shape)}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = frame.clone()
    h, w = frame.shape[:2]
    for x1, y1, x2, y2 in boxes.tolist():
        gx, gy = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - gx)), max(0, int(y1 - gy))
        right, bottom = min(w, int(x2 + gx) + 1), min(h, int(y2 + gy) + 1)
        if right - left < 2 or bottom - top < 2:
            continue
        region = out[top:bottom, left:right].permute(2, 0, 1)[None].float()
        n = max(1, min(cells, min(bottom - top, right - left) // 6))
        small = F.adaptive_avg_pool2d(region, (n, n))
        coarse = F.interpolate(small, size=region.shape[-2:], mode="bilinear", align_corners=False)
        out[top:bottom, left:right] = coarse[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    return out


def check_identities(
    out: torch.Tensor, faces: list[tuple[int, FaceRecord]], frame_indices: list[int], embed: Embed,
    policy: IdentityPolicy, identities: dict[int, TrackIdentity], report: RunReport,
) -> None:
    """Embed each replaced face of ``out`` and compare it with what ``policy`` says.

    ``faces``: (row of ``out``, record) pairs; ``frame_indices[row]`` is the frame's index in
    the video. Records whose face fails ``policy.check`` get ``failed`` set; every similarity
    goes into the track's report.
    """
    if out.dtype != torch.uint8 or out.ndim != 4 or len(frame_indices) != out.shape[0]:
        raise ShapeError(f"frames must be uint8 [T,H,W,3] with T={len(frame_indices)} frame indices, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not faces:
        return
    index = torch.tensor([j for j, _f in faces], dtype=torch.long, device=out.device)
    points = torch.from_numpy(np.stack([f.points for _j, f in faces])).to(out.device)
    with report.timer("identity"):
        codes = embed(out, index, points)
    for (j, record), code in zip(faces, codes, strict=True):
        ref = policy.compare_with(identities[record.track_id])
        sim = float(cosine_similarity(code[None], ref[None].to(code.device)).reshape(-1)[0])
        report.tracks[record.track_id].add_similarity(frame_indices[j], sim)
        reason = policy.check(sim)
        if reason is not None:
            record.failed = reason


def untracked_faces(raw: FaceDetections, tracked_boxes: np.ndarray) -> list[FaceRecord]:
    """Detections that no released track covers, as failed records (track id -1).

    Faces of tracks that ``--faces`` left out on purpose count as covered.
    """
    out = []
    for box in raw.boxes:
        if not bool((box_iou(box, tracked_boxes) > COVER_IOU).any()):
            out.append(FaceRecord(-1, box.copy(), np.zeros((5, 2), np.float32), failed="untracked"))
    return out


def redact(out: torch.Tensor, slots: list[FrameSlot], blur: bool, report: RunReport) -> torch.Tensor:
    """Count every face once (reenact: replaced or left); with ``blur`` blur the failed ones
    (a policy that redacts uses :class:`PrivacyGuard` instead).

    Conventions: out uint8 [T,H,W,3], one row per slot; returns the same shape.
    """
    if out.ndim != 4 or out.shape[0] != len(slots):
        raise ShapeError(f"frames must be [T,H,W,3] with T={len(slots)}, got {tuple(out.shape)}")
    rows = []
    for j, slot in enumerate(slots):
        failed = [f for f in slot.faces if f.failed is not None]
        for f in slot.faces:
            if f.track_id == -1:
                report.count("untracked_detections_blurred", int(blur))
                continue
            track = report.tracks[f.track_id]
            track.frames += 1
            if f.failed is None:
                track.replaced += 1
                report.count("faces_replaced")
            else:
                track.blurred += int(blur)
        if blur and failed:
            report.count("faces_blurred", len(failed))
            with report.timer("blend"):
                rows.append(blur_boxes(out[j], torch.from_numpy(np.stack([f.box for f in failed]))))
        else:
            rows.append(out[j])
    return torch.stack(rows)


# --- the box redactions --------------------------------------------------------------------

def head_box(box: np.ndarray | list[float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The face box grown to the head: ``margin`` of its size left, right and below, twice
    that above (hair), clipped to the frame. Returns integer (left, top, right, bottom)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    gx, gy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(np.floor(x1 - gx))), max(0, int(np.floor(y1 - 2 * gy)))
    right, bottom = min(width, int(np.ceil(x2 + gx)) + 1), min(height, int(np.ceil(y2 + gy)) + 1)
    return left, top, max(left, right), max(top, bottom)


#: most blocks per side of a head box, per box redaction (see :func:`redact_region`). Blur
#: keeps at most 4: with 8, a smooth blur of the 720p fixture clip's dim ~90 px faces left the
#: central half of 22 % of them within 6 levels of the original (``bench/vs_deface.py``); 4
#: blocks alone still left them identifiable, hence :data:`BLUR_MARGIN_SCALE` and
#: :data:`BLUR_NOISE` below. Pixelation's hard block edges keep the independent recogniser
#: (MobileFace, ``bench/privacy.py``) at its floor with 8.
REDACTION_CELLS = {"pixelate": 8, "blur": 4}

#: blur reaches this many times further than the head box's margin (``head_margin``). A
#: smooth blur keeps the head's coarse light and dark layout, and on the 720p fixture
#: clip's dim ~90 px faces an independent recogniser (MobileFace, ``bench/privacy.py``'s
#: judge, 20 frames, 107 faces) still picked the right person out of deidentify's blur in
#: 41 of them, above the 18 it "links" to a black head box (its floor); twice as wide, 33.
#: Pixelation's hard block edges need neither a wider region nor grain (11).
BLUR_MARGIN_SCALE = 2.0

#: standard deviation (levels) of the grain added to a blur. Blurred smooth, even twice as
#: wide, the friends clip's faces were still linked above the floor (33 of 107 against 18);
#: with this grain 8 (and 7 with grain 20 on the narrower box, 21 with grain 10). Grain also
#: leaves a deblurring attack no clean signal to sharpen (not measured here).
BLUR_NOISE = 10.0

#: seed of the grain field (:func:`grain_field`)
GRAIN_SEED = 20201


@functools.lru_cache(maxsize=2)
def grain_field(height: int, width: int) -> torch.Tensor:
    """The blur's grain for a frame of ``height`` x ``width``: normal, :data:`BLUR_NOISE`
    levels of standard deviation, rounded to whole levels, from :data:`GRAIN_SEED`.

    The grain belongs to the frame's pixels, not to the region blurred: a pixel gets the
    same grain in every frame. Seeded by the region instead (as it was first), a blurred head
    that moves by a pixel got all-new noise each frame, which the encoder must spend bits on:
    the 512x512 fixture clip's 60 frames blurred came out at 4.4 MB against 70 kB without
    grain. Within one frame the two are alike (the same normal grain on every pixel).
    Like any seeded grain it is known to whoever reads this code, so it hides the face from a
    recogniser that takes the frame as it is, not from one that first subtracts the grain.

    Conventions: returns int8 [height,width,3] (kept for the last two frame sizes).
    """
    grain = torch.randn((height, width, 3), generator=torch.Generator().manual_seed(GRAIN_SEED))
    return grain.mul_(BLUR_NOISE).round_().clamp_(-127, 127).to(torch.int8)


def redact_region(frame: torch.Tensor, region: tuple[int, int, int, int], method: str,
                  cells: int | None = None) -> torch.Tensor:
    """Return ``frame`` with ``region`` (left, top, right, bottom) redacted by ``method``.

    ``pixelate``: blocks of at least 8 px, at most ``cells`` per side; ``blur``: the region
    reduced to at most ``cells`` per side (at least 6 px each), smoothly enlarged again, with
    the frame's grain added (:func:`grain_field`: the same pixel gets the same grain);
    ``solid``: filled black. ``cells`` defaults to :data:`REDACTION_CELLS` of the method.
    The input is not modified (:func:`redact_region_` redacts in place).

    Conventions: frame uint8 [H,W,3]; returns the same.
    """
    out = frame.clone()
    redact_region_(out, region, method, cells)  # checks the frame
    return out


def redact_region_(frame: torch.Tensor, region: tuple[int, int, int, int], method: str,
                   cells: int | None = None) -> None:
    """:func:`redact_region` in place: only the region's pixels are read and written (the
    ladder redacts faces of frames it already owns, without a copy of the frame per face)."""
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ShapeError(f"frame must be uint8 [H,W,3], got {frame.dtype} {tuple(frame.shape)}")
    left, top, right, bottom = region
    if right <= left or bottom <= top:
        return
    if method == "solid":
        frame[top:bottom, left:right] = 0
        return
    if method not in ("pixelate", "blur"):
        raise ShapeError(f"unknown redaction {method!r}; use pixelate, blur or solid")
    cells = REDACTION_CELLS[method] if cells is None else cells
    patch = frame[top:bottom, left:right].permute(2, 0, 1)[None].float()
    side = min(bottom - top, right - left)
    n = max(1, min(cells, side // (8 if method == "pixelate" else 6)))
    small = F.adaptive_avg_pool2d(patch, (n, n))
    if method == "pixelate":
        big = F.interpolate(small, size=patch.shape[-2:], mode="nearest")
    else:
        # F.interpolate's bicubic, as two small matrix products: 6x faster on a head-sized region
        rows, cols = _bicubic_weights(bottom - top, n), _bicubic_weights(right - left, n)
        big = (rows.to(small.device) @ small.squeeze(0) @ cols.to(small.device).T)[None]
        # the frame's grain on these pixels (grain_field)
        grain = grain_field(frame.shape[0], frame.shape[1])[top:bottom, left:right]
        big.add_(grain.permute(2, 0, 1)[None].to(big.device))
    # rounded and clamped first, so the copy into uint8 only drops the (zero) fraction
    frame[top:bottom, left:right].copy_(big[0].permute(1, 2, 0).round_().clamp_(0, 255))


def _bicubic_weights(out_size: int, in_size: int) -> torch.Tensor:
    """The [out_size, in_size] matrix of bicubic enlargement along one axis, as
    ``F.interpolate(mode="bicubic", align_corners=False)`` computes it: half-pixel centres,
    Keys' cubic with a = -0.75, taps past either end clamped to the edge."""
    x = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    x0 = torch.floor(x)
    t = x - x0
    a = -0.75

    def near(d: torch.Tensor) -> torch.Tensor:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: torch.Tensor) -> torch.Tensor:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    taps = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    index = (x0[:, None] + torch.arange(-1, 3)).clamp(0, in_size - 1).long()
    return torch.zeros(out_size, in_size, dtype=torch.float64).scatter_add_(1, index, taps).float()


# --- the checkers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checker:
    """One identity model with one chip, and the privacy threshold an output face must stay below."""

    encoder: IdentityEncoder
    chip: Chip
    threshold: float
    source: str
    genuine_pairs: int | None = None
    false_match_rate: float | None = None

    @property
    def name(self) -> str:
        return f"{self.encoder.name}/{self.chip}"

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Conventions: frames uint8 [T,H,W,3]; index long [F]; points float [F,5,2]; returns [F,D]."""
        return embed_with_chip(self.encoder, frames, index, points, self.chip)

    def describe(self) -> dict[str, object]:
        return {"model": self.encoder.name, "chip": self.chip, "threshold": self.threshold, "source": self.source,
                "genuine_pairs": self.genuine_pairs, "false_match_rate": self.false_match_rate}


def checkers_for(encoders: list[IdentityEncoder], override: float | None = None) -> list[Checker]:
    """A checker per identity model (deduplicated by name) and chip, with its calibrated
    privacy threshold, or ``override`` (``deidentify.privacy_threshold``) for all."""
    out, seen = [], set()
    for encoder in encoders:
        if encoder.name in seen:
            continue
        seen.add(encoder.name)
        for chip in CHIPS:
            threshold = privacy_threshold(encoder.name, chip, override)
            if override is not None:
                out.append(Checker(encoder, chip, threshold, "deidentify.privacy_threshold"))
            else:
                cal = PRIVACY_THRESHOLDS[encoder.name][chip]
                out.append(Checker(encoder, chip, threshold, cal.source, cal.genuine_pairs, cal.false_match_rate))
    return out


@functools.lru_cache(maxsize=1)
def offline_dlib() -> DlibFaceEncoder:
    """dlib's face descriptor, loaded once per process (it is always available offline)."""
    return DlibFaceEncoder()


def run_recognisers(identity: IdentityEncoder, recogniser: IdentityEncoder | None) -> list[IdentityEncoder]:
    """Every identity model a run has that recognises people: the pack's recogniser when it has
    one (then ``identity`` is the mapper's code model, not a recogniser), else its identity
    model; and dlib's descriptor always."""
    models = [recogniser] if recogniser is not None else [identity]
    if all(m.name != DlibFaceEncoder.name for m in models):
        models.append(offline_dlib())
    return models


# --- the ladder --------------------------------------------------------------------------------

SYNTHETIC_RUNGS = ("synthetic", "redraw", "grown_mask")
BOX_RUNGS = ("pixelate", "blur", "solid")

Render = Callable[[torch.Tensor, list[tuple[int, FaceRecord]], list[torch.Tensor | None], bool], torch.Tensor]
"""(out frames, faces (row, record), identity code per face or None for the record's own
latent, grown mask) -> out frames with those faces rendered again; marks refused faces failed."""

Redraw = Callable[[int], torch.Tensor | None]
"""track id -> a new synthetic identity code for it, or None when none is left."""


def ladder_for(method: str, head_redaction: str = "pixelate", redraws: int = 1) -> tuple[str, ...]:
    """The rungs of ``method`` (module docstring): synthetic climbs redraw and grown mask first."""
    if method == "synthetic":
        return ("synthetic",) + (("redraw",) if redraws > 0 else ()) + ("grown_mask", head_redaction, "solid")
    if method in ("blur", "pixelate"):
        return (method, "solid")
    if method == "solid":
        return ("solid",)
    raise ShapeError(f"unknown deidentify method {method!r}")


def _checkable(points: np.ndarray) -> bool:
    """Whether a face's five points can align a chip (finite, eyes apart)."""
    pts = np.asarray(points, dtype=np.float64)
    return bool(pts.shape == (5, 2) and np.isfinite(pts).all() and np.linalg.norm(pts[1] - pts[0]) >= 1.0)


#: frames between two embeddings of a track's original face (see PrivacyGuard._originals)
ORIGINAL_REFRESH_FRAMES = 8


@dataclass
class _Face:
    row: int
    record: FaceRecord
    rung: int
    orig: int = 0
    similarities: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class PrivacyGuard:
    """Checks output faces and climbs the ladder until each passes (module docstring).

    ``checkers``: what checks a face; ``ladder``: from :func:`ladder_for`; ``render`` and
    ``redraw``: the synthetic rungs (needed only when the ladder has them); ``head_margin``:
    see :func:`head_box`. Per-track results go into ``report``.
    """

    def __init__(
        self, checkers: list[Checker], ladder: tuple[str, ...], report: RunReport, *, head_margin: float = 0.3,
        render: Render | None = None, redraw: Redraw | None = None, redraws: int = 0,
    ) -> None:
        if not checkers:
            raise ShapeError("the privacy check needs at least one checker")
        if ladder[-1] != "solid":
            raise ShapeError(f"a ladder must end with solid (nothing written unredacted), got {ladder}")
        if any(r in ladder for r in SYNTHETIC_RUNGS) and render is None:
            raise ShapeError("a ladder with synthetic rungs needs a render function")
        self.checkers, self.ladder, self.report = checkers, ladder, report
        self.head_margin, self.render, self.redraw, self.redraws = head_margin, render, redraw, redraws
        self.first_box = min(i for i, r in enumerate(ladder) if r in BOX_RUNGS)
        self.track_rung: dict[int, int] = {}
        self.codes: dict[int, torch.Tensor] = {}
        self.redrawn: dict[int, int] = {}
        #: per track: the frame its original embeddings were taken at, and those embeddings
        self.original_cache: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        report.privacy = {"ladder": list(ladder), "checkers": [c.describe() for c in checkers]}

    def start_rung(self, record: FaceRecord) -> int:
        """Where a face starts: its track's rung; at least the box rung when it was not synthesized."""
        rung = self.track_rung.get(record.track_id, 0)
        return max(rung, self.first_box) if record.failed is not None else rung

    def apply(self, frames: torch.Tensor, out: torch.Tensor, faces: list[tuple[int, FaceRecord]],
              frame_indices: list[int]) -> torch.Tensor:
        """Check every face of ``out`` and climb the ladder until it passes; returns the frames.

        ``frames``: the input frames (the originals), ``out``: the composited ones (synthetic
        faces pasted where the ladder starts there); ``faces``: (row, record) of every face.

        Conventions: frames and out uint8 [T,H,W,3]; ``frame_indices[row]`` the video index.
        """
        if frames.shape != out.shape or frames.dtype != torch.uint8 or frames.ndim != 4:
            raise ShapeError(f"frames and out must be the same uint8 [T,H,W,3], got {tuple(frames.shape)} "
                             f"{frames.dtype} and {tuple(out.shape)}")
        if len(frame_indices) != frames.shape[0]:
            raise ShapeError(f"{len(frame_indices)} frame indices for {frames.shape[0]} frames")
        pending = [_Face(j, f, self.start_rung(f), k) for k, (j, f) in enumerate(faces)]
        if not pending:
            return out
        out = out.clone()
        last = len(self.ladder) - 1
        for face in pending:
            if not _checkable(face.record.points):
                face.rung, face.error = last, face.record.failed or "no face points to check it with"
        checkable = [f for f in pending if f.rung != last]
        for k, face in enumerate(checkable):
            face.orig = k
        originals = self._originals(frames, checkable, frame_indices) if checkable else {}
        while pending:
            at_rung: dict[int, list[_Face]] = {}
            for face in pending:
                at_rung.setdefault(face.rung, []).append(face)
            for rung, group in sorted(at_rung.items()):
                out = self._apply_rung(self.ladder[rung], out, group)
            pending = []
            to_check = [f for f in self._flatten(at_rung) if self.ladder[f.rung] != "solid"]
            for face in self._flatten(at_rung):
                if self.ladder[face.rung] == "solid":
                    self._done(face, frame_indices, passed=True)
            if not to_check:
                break
            sims = self._similarities(out, to_check, originals)
            for face, row in zip(to_check, sims, strict=True):
                if row is None:
                    face.error = "the output face could not be checked"
                    face.rung = len(self.ladder) - 1
                    pending.append(face)
                    continue
                face.similarities = row
                if all(row[c.name] < c.threshold for c in self.checkers):
                    self._done(face, frame_indices, passed=True)
                else:
                    face.rung = self._next_rung(face)
                    pending.append(face)
        return out

    @staticmethod
    def _flatten(groups: dict[int, list[_Face]]) -> list[_Face]:
        return [f for _r, g in sorted(groups.items()) for f in g]

    def _next_rung(self, face: _Face) -> int:
        """The rung after a failed check: redraw stays while the track has draws left."""
        rung = self.ladder[face.rung]
        track = face.record.track_id
        if rung == "redraw" and self.redrawn.get(track, 0) < self.redraws and self.redraw is not None:
            self.codes.pop(track, None)  # the identity it had failed: draw another
            return face.rung
        if rung == "redraw":
            self.codes.pop(track, None)
        nxt = face.rung + 1
        if face.record.failed is not None:
            nxt = max(nxt, self.first_box)
        return nxt

    def _originals(self, frames: torch.Tensor, faces: list[_Face], frame_indices: list[int]) -> dict[str, torch.Tensor]:
        """Each checker's embeddings of the original faces, one row per face in ``faces``.

        A person's identity does not change within a track, so a track's original is embedded
        again only every :data:`ORIGINAL_REFRESH_FRAMES` frames (the pose does change, hence the
        refresh); untracked faces are embedded every time. Embeddings that failed (NaN) are
        never kept.
        """
        need = [f for f in faces if not self._cached(f.record.track_id, frame_indices[f.row])]
        fresh = self._embed(frames, need) if need else {}
        where = {id(f): k for k, f in enumerate(need)}
        rows: dict[str, list[torch.Tensor]] = {c.name: [] for c in self.checkers}
        for face in faces:
            track = face.record.track_id
            if id(face) in where:
                codes = {c.name: fresh[c.name][where[id(face)]] for c in self.checkers}
                if track >= 0 and all(bool(torch.isfinite(v).all()) for v in codes.values()):
                    self.original_cache[track] = (frame_indices[face.row], codes)
            else:
                codes = self.original_cache[track][1]
            for name, code in codes.items():
                rows[name].append(code)
        return {name: torch.stack(v) for name, v in rows.items()}

    def _cached(self, track: int, frame_index: int) -> bool:
        entry = self.original_cache.get(track)
        return track >= 0 and entry is not None and 0 <= frame_index - entry[0] < ORIGINAL_REFRESH_FRAMES

    def _embed(self, frames: torch.Tensor, faces: list[_Face]) -> dict[str, torch.Tensor]:
        """Each checker's embeddings of the original faces (None when that fails: fail closed)."""
        try:
            index = torch.tensor([f.row for f in faces], dtype=torch.long, device=frames.device)
            points = torch.from_numpy(np.stack([f.record.points for f in faces])).float().to(frames.device)
            with self.report.timer("privacy"):
                return {c.name: c.embed(frames, index, points) for c in self.checkers}
        except Exception as exc:  # noqa: BLE001 - fail closed: whatever went wrong, the faces are redacted
            log.warning("privacy check: original faces could not be embedded (%s); they are redacted", exc)
            return self._embed_one_by_one(frames, faces)

    def _embed_one_by_one(self, frames: torch.Tensor, faces: list[_Face]) -> dict[str, torch.Tensor]:
        """Embed faces one at a time so one bad face (e.g. degenerate points) fails alone."""
        rows: dict[str, list[torch.Tensor]] = {c.name: [] for c in self.checkers}
        for face in faces:
            try:
                index = torch.tensor([face.row], dtype=torch.long, device=frames.device)
                points = torch.from_numpy(face.record.points[None]).float().to(frames.device)
                codes = {c.name: c.embed(frames, index, points)[0] for c in self.checkers}
            except Exception:  # noqa: BLE001 - fail closed for this face
                face.rung, face.error = len(self.ladder) - 1, "the original face could not be embedded"
                codes = {c.name: torch.full((c.encoder.dim,), float("nan"), device=frames.device)
                         for c in self.checkers}
            for name, code in codes.items():
                rows[name].append(code)
        return {name: torch.stack(v) for name, v in rows.items()}

    def _similarities(self, out: torch.Tensor, faces: list[_Face],
                      originals: dict[str, torch.Tensor]) -> list[dict[str, float] | None]:
        """Per face, each checker's similarity of the output face to its original (None: the
        check raised or gave no number)."""
        index = torch.tensor([f.row for f in faces], dtype=torch.long, device=out.device)
        points = torch.from_numpy(np.stack([f.record.points for f in faces])).float().to(out.device)
        try:
            with self.report.timer("privacy"):
                sims = {}
                for c in self.checkers:
                    emb = c.embed(out, index, points)
                    ref = originals[c.name][[f.orig for f in faces]].to(emb.device)
                    sims[c.name] = cosine_similarity(emb, ref).reshape(-1).tolist()
        except Exception as exc:  # noqa: BLE001 - fail closed: the faces are redacted
            log.warning("privacy check failed (%s); the faces are redacted", exc)
            return [None] * len(faces)
        rows: list[dict[str, float] | None] = []
        for k in range(len(faces)):
            row = {name: float(v[k]) for name, v in sims.items()}
            rows.append(None if any(not np.isfinite(v) for v in row.values()) else row)
        return rows

    def _apply_rung(self, rung: str, out: torch.Tensor, group: list[_Face]) -> torch.Tensor:
        if rung == "synthetic":
            return out
        if rung in ("redraw", "grown_mask"):
            return self._render(rung, out, group)
        height, width = out.shape[1:3]
        for face in group:  # out is apply's own copy: redacted in place
            margin = self.head_margin * (BLUR_MARGIN_SCALE if rung == "blur" else 1.0)
            redact_region_(out[face.row], head_box(face.record.box, margin, width, height), rung)
        return out

    def _render(self, rung: str, out: torch.Tensor, group: list[_Face]) -> torch.Tensor:
        assert self.render is not None
        codes: list[torch.Tensor | None] = []
        for face in group:
            track = face.record.track_id
            if track not in self.codes and rung == "redraw" and self.redraw is not None:
                if self.redrawn.get(track, 0) < self.redraws:
                    self.redrawn[track] = self.redrawn.get(track, 0) + 1
                    code = self.redraw(track)
                    if code is not None:
                        self.codes[track] = code
            codes.append(self.codes.get(track))
        ok = [(f, c) for f, c in zip(group, codes, strict=True) if c is not None or rung == "grown_mask"]
        if not ok:
            return out
        with self.report.timer("synthesize"):
            out = self.render(out, [(f.row, f.record) for f, _c in ok], [c for _f, c in ok], rung == "grown_mask")
        return out

    def _done(self, face: _Face, frame_indices: list[int], passed: bool) -> None:
        rung = self.ladder[face.rung]
        record = face.record
        if record.track_id >= 0:
            self.track_rung[record.track_id] = max(self.track_rung.get(record.track_id, 0), face.rung)
        # solid is not checked (nothing is left to recognise): what the face-frame reports is the
        # written output's check, so the failed check that led there is not kept
        sims = {} if rung == "solid" else face.similarities
        self.report.add_privacy(record.track_id, frame_indices[face.row], rung, sims, passed and face.error is None,
                                face.error or record.failed)
