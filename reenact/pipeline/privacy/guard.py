"""The privacy guard (deidentify): the escalation ladder and fail-closed redaction.

:class:`PrivacyGuard` checks what an attacker would see. On the final composited frame every
output face is embedded by every :class:`~reenact.pipeline.privacy.checkers.Checker` (each
identity model the run has, dlib's descriptor always among them, times the ``tight`` and
``loose`` chip) and compared with the same model+chip's embedding of the original face in the
input frame; the same-context baseline (the original frame with the face-shaped region filled
flat, :mod:`reenact.pipeline.baseline`) is embedded with it (both per track, refreshed every
:data:`ORIGINAL_REFRESH_FRAMES` frames, batched), and
:func:`~reenact.pipeline.privacy.checkers.passes` decides. A face that fails climbs its track's
ladder, and a track starts its next frames on the rung it reached (no flicker back to a weaker
rung):

``synthetic`` (the rendered synthetic identity) -> ``redraw`` (another synthetic identity, at
most ``deidentify.redraws`` per track) -> ``grown_mask`` (the face pasted with a mask grown to
forehead and jaw) -> ``blur`` (the face-shaped region blurred: forehead to chin, ears,
hairline; :mod:`reenact.blend.redact`) -> ``fill`` (the face-shaped region filled with its
own mean colour: the face gone, its context and light kept; it is the check's same-context
baseline itself, so where context alone reaches a checker's operating point it passes by
construction, and elsewhere its similarity is the baseline's, below that point) ->
``head_blur`` / ``head_pixelate`` (the head box, the region's bounds, never wider than the
head; ``deidentify.head_redaction``: reached where ``fill`` fails: no usable baseline, a
baseline at the operating point's edge, or a fill measured more than
:data:`~reenact.pipeline.privacy.checkers.FILL_TOLERANCE` above it) -> ``solid`` (the head box filled black: the last rung, which leaves
nothing to check).
``--method blur`` starts on ``blur``, ``--method pixelate`` on ``pixelate`` (the face-shaped
region pixelated), ``--method solid`` on ``face_solid`` (the face-shaped region filled black,
as deface's default ellipse), then the head box filled black. ``face_solid`` leaves even less
of the face than ``fill`` (not its mean colour: the black depends on the region alone), so
where context alone reaches a checker's operating point it passes that checker by
construction as ``fill`` does (:data:`CONTEXT_ONLY_RUNGS`, within the same
:data:`~reenact.pipeline.privacy.checkers.FILL_TOLERANCE` of the baseline), on a face at
least :data:`BLACK_OVAL_MIN_WIDTH` wide; elsewhere it is measured like the other rungs, and
the black head box follows where it links. Faces that could not be synthesized (no
identity, refused by the blender, outside the frame, too small, untracked) start on the first
redaction rung; a face whose check raises, or that has no points to check it with, goes to
``solid``. :func:`untracked_faces` makes records of the detections no track covers.

**The re-check rule** (the check is priced per face, not per face-frame). A face *carries* its
track's last measured check, instead of being embedded again, when all of these hold:

* its rung is a redaction the check can be carried on (``blur``, ``pixelate``, ``face_solid``,
  ``head_blur``, ``head_pixelate``, ``fill``: :data:`CARRY_RUNGS`; their output is a function of the original frame and
  the face's box and points) and is the rung that check was measured on. Synthetic rungs
  (a new face rendered every frame) and faces whose track changed rung are measured on every
  frame; ``solid`` is never checked;
* that check passed at least :data:`CARRY_HEADROOM` (0.06) below its limit on every checker
  (:func:`~reenact.pipeline.privacy.checkers.headroom`; on the fixture crowd clip (1000
  face-frames, ``--method blur``), measured after the fact by ``bench/recheck.py --shadow``:
  with 0.05, 142-143 carried and the headroom of carried faces fell by up to 0.054-0.056, so
  1 of 143 failed on one tree; with 0.06, 96 carried, none failed, the most it fell was 0.053);
* it is fewer than :data:`RECHECK_FRAMES` (4) frames after that check, so a steady track is
  measured on every 4th frame;
* the face is where it was at that check: its box's centre within :data:`CARRY_SHIFT` (0.1)
  of the box's size, its size within :data:`CARRY_SCALE` (10 %), each of its five points,
  relative to the box's centre, within :data:`CARRY_POINTS` (0.05) of the size (the pose);
* its redaction changed the face's box at least :data:`CARRY_CHANGE` (half) as much as it did
  at that check (mean absolute change, :func:`change`): a redaction that weakens while the
  face holds still is measured at once, on the rung already applied, and climbs from there.

A carried face is redacted on its track's rung like a measured one and recorded in the report
as carried (``privacy.carried`` per track, ``counts.privacy_checks_carried``; in the audit its
reason names the frame it carries): it counts in the rung shares, never in the similarities
or margins, which are measured ones only. Within one chunk a track's first face is measured
and the later ones carry its check once it passed (a face whose anchor failed is measured on
its own). A track's original is embedded once per :data:`ORIGINAL_REFRESH_FRAMES` frames,
across chunks and within one.

**Batching** (the check is priced per chip batch, not per checker and kind of chip). A round
of the ladder embeds every chip it needs (the originals not cached yet, their same-context
baselines and the output faces, each checker's chip) in one forward per recogniser
(:func:`~reenact.pipeline.privacy.checkers.embed_jobs`, at most
:data:`~reenact.pipeline.privacy.checkers.CHECK_BATCH` chips at once); the faces of the chunk
that fail climb together and are checked in the next round's one forward.

Conventions: frames uint8 ``[T,H,W,3]`` RGB; boxes float ``[N,4]`` (x1, y1, x2, y2) and
points ``[N,5,2]`` frame pixels; embeddings float ``[F,D]`` unit rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from reenact.blend.redact import SMALL_FACE, face_regions, redact_faces_
from reenact.errors import ShapeError
from reenact.faces import FaceDetections
from reenact.faces.boxes import box_iou
from reenact.pipeline.baseline import flat_windows
from reenact.pipeline.privacy.checkers import (
    Checker,
    ChipJob,
    checkable,
    embed_jobs,
    headroom,
    margins,
    passes,
)
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord

log = logging.getLogger(__name__)

COVER_IOU = 0.3
"""A detection overlapping a released track's box by more than this IoU counts as covered."""


def untracked_faces(raw: FaceDetections, tracked_boxes: np.ndarray) -> list[FaceRecord]:
    """Detections that no released track covers, as failed records (track id -1).

    Faces of tracks that ``--faces`` left out on purpose count as covered.
    """
    out = []
    for box in raw.boxes:
        if not bool((box_iou(box, tracked_boxes) > COVER_IOU).any()):
            out.append(FaceRecord(-1, box.copy(), np.zeros((5, 2), np.float32), failed="untracked"))
    return out


SYNTHETIC_RUNGS = ("synthetic", "redraw", "grown_mask")
#: the redaction rungs: face-shaped first (redacted, then filled with its own mean colour), then
#: the head box, then the head box filled black
REDACTION_RUNGS = ("blur", "pixelate", "face_solid", "fill", "head_blur", "head_pixelate", "solid")
#: the rungs that leave nothing of the face inside its region, only its context: ``fill`` (the
#: region in the original's mean colour, the same-context baseline itself) and ``face_solid``
#: (the region black, a function of the region alone: less of the face than ``fill``, which
#: keeps its mean colour). Where context alone reaches a checker's operating point they pass
#: it by construction (:func:`~reenact.pipeline.privacy.checkers.passes`, ``is_baseline``)
CONTEXT_ONLY_RUNGS = ("fill", "face_solid")
#: ... a black oval only on a region at least this wide (px): a small face's chip is enlarged,
#: and the oval's hard dark outline is then the head's silhouette to it. On the 1080p fixture
#: crowd (``--method solid``, 12 frames) the fixture MobileFace linked 7 of 84 faces with
#: every black oval passing by construction, 6 (its black-head-box floor: 6) with the smaller
#: ones measured (33 of 149 face-frames then climb to the head box); the 720p clip's faces
#: are wider (12 of 67 linked either way, its floor 12); black *boxes* on the small faces
#: instead, without a check, linked 6 too but drew rectangles on hamilton's speaker
BLACK_OVAL_MIN_WIDTH = SMALL_FACE // 2

Render = Callable[[torch.Tensor, torch.Tensor, list[tuple[int, FaceRecord]], list[torch.Tensor | None], bool],
                  torch.Tensor]
"""(input frames, out frames, faces (row, record), identity code per face or None for the
record's own latent, grown mask) -> out frames with those faces rendered again; marks refused
faces failed."""

Redraw = Callable[[int], torch.Tensor | None]
"""track id -> a new synthetic identity code for it, or None when none is left."""


def ladder_for(method: str, head_redaction: str = "blur", redraws: int = 1) -> tuple[str, ...]:
    """The rungs of ``method`` (module docstring): synthetic climbs redraw and grown mask first;
    every ladder redacts the face's shape before the head box, and ends with solid."""
    head = f"head_{head_redaction}"
    # the baseline itself (face-shaped), then the head box, then black: solid only where no check can be made
    if method == "synthetic":
        return ("synthetic",) + (("redraw",) if redraws > 0 else ()) + ("grown_mask", "blur", "fill", head, "solid")
    if method == "blur":
        return ("blur", "fill", head, "solid") if head == "head_blur" else ("blur", "fill", head, "head_blur", "solid")
    if method == "pixelate":
        return ("pixelate", "fill", "head_pixelate", "head_blur", "solid")
    if method == "solid":
        return ("face_solid", "solid")
    raise ShapeError(f"unknown deidentify method {method!r}")


#: frames between two embeddings of a track's original face (see PrivacyGuard._originals)
ORIGINAL_REFRESH_FRAMES = 8

#: the re-check rule (module docstring): a measured check is carried for at most this many frames
RECHECK_FRAMES = 4
#: ... only from a face that passed at least this far below its limit (headroom, cosine)
CARRY_HEADROOM = 0.06
#: ... while the box's centre stays within this share of the box's size of the measured one
CARRY_SHIFT = 0.1
#: ... its size within this share of the measured one's
CARRY_SCALE = 0.1
#: ... and each of the five points (relative to the box's centre) within this share of its size
CARRY_POINTS = 0.05
#: ... on these rungs only: the redaction is a function of the original frame and the face's box
#: and points (the synthetic rungs render a new face each frame; solid is never checked)
CARRY_RUNGS = ("blur", "pixelate", "face_solid", "head_blur", "head_pixelate", "fill")
#: ... and only where the redaction changed the face's box at least this share as much as it did
#: on the measured face (mean absolute change of its pixels): a redaction that weakens while the
#: face holds still is measured at once
CARRY_CHANGE = 0.5


@dataclass
class _Face:
    row: int
    record: FaceRecord
    rung: int
    orig: int = 0
    similarities: dict[str, float] = field(default_factory=dict)
    #: per checker, the similarity of the face's same-context baseline to its original
    baselines: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: the face of this chunk whose measured check this one may carry (see PrivacyGuard._plan)
    anchor: _Face | None = None
    #: the check this face carries, once decided
    carried: _Check | None = None
    #: its rung is already applied to the output (a carried face whose pixel check failed)
    applied: bool = False


@dataclass(frozen=True)
class _Check:
    """A track's last measured check that passed: where the face was, on which rung, and its
    headroom (:func:`~reenact.pipeline.privacy.checkers.headroom`)."""

    frame: int
    rung: int
    box: np.ndarray
    points: np.ndarray
    headroom: float
    #: how much the rung changed the face's box (:func:`change`)
    change: float


def change(frames: torch.Tensor, out: torch.Tensor, row: int, box: np.ndarray) -> float:
    """Mean absolute difference (grey levels) of ``out`` from ``frames`` in a face's box.

    Conventions: frames and out uint8 [T,H,W,3]; box float [4] frame pixels.
    """
    height, width = frames.shape[1:3]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float((out[row, y0:y1, x0:x1].float() - frames[row, y0:y1, x0:x1].float()).abs().mean())


def steady(box: np.ndarray, points: np.ndarray, ref_box: np.ndarray, ref_points: np.ndarray) -> bool:
    """Whether a face is where the measured one was, at the same size and pose (the bounds of
    the re-check rule: :data:`CARRY_SHIFT`, :data:`CARRY_SCALE`, :data:`CARRY_POINTS`).

    Conventions: boxes float [4] (x1, y1, x2, y2), points float [5,2], frame pixels.
    """
    box, ref_box = np.asarray(box, np.float64), np.asarray(ref_box, np.float64)
    size = max(float(ref_box[2] - ref_box[0]), float(ref_box[3] - ref_box[1]))
    now = max(float(box[2] - box[0]), float(box[3] - box[1]))
    centre, ref_centre = (box[:2] + box[2:]) / 2, (ref_box[:2] + ref_box[2:]) / 2
    pose = (np.asarray(points, np.float64) - centre) - (np.asarray(ref_points, np.float64) - ref_centre)
    return bool(np.linalg.norm(centre - ref_centre) <= CARRY_SHIFT * size
                and abs(now - size) <= CARRY_SCALE * size
                and np.isfinite(pose).all() and float(np.linalg.norm(pose, axis=1).max()) <= CARRY_POINTS * size)


class PrivacyGuard:
    """Checks output faces and climbs the ladder until each passes (module docstring).

    ``checkers``: what checks a face; ``ladder``: from :func:`ladder_for`; ``render`` and
    ``redraw``: the synthetic rungs (needed only when the ladder has them). Per-track results
    go into ``report`` (the caller records the ladder and checkers there: :meth:`describe`).
    """

    def __init__(
        self, checkers: list[Checker], ladder: tuple[str, ...], report: RunReport, *,
        render: Render | None = None, redraw: Redraw | None = None, redraws: int = 0,
    ) -> None:
        if not checkers:
            raise ShapeError("the privacy check needs at least one checker")
        if ladder[-1] != "solid":
            raise ShapeError(f"a ladder must end with solid (nothing written unredacted), got {ladder}")
        if any(r in ladder for r in SYNTHETIC_RUNGS) and render is None:
            raise ShapeError("a ladder with synthetic rungs needs a render function")
        self.checkers, self.ladder, self.report = checkers, ladder, report
        self.render, self.redraw, self.redraws = render, redraw, redraws
        #: the first redaction rung (where faces that were not synthesized start)
        self.first_box = min(i for i, r in enumerate(ladder) if r in REDACTION_RUNGS)
        self.track_rung: dict[int, int] = {}
        self.codes: dict[int, torch.Tensor] = {}
        self.redrawn: dict[int, int] = {}
        #: per track: the frame its original embeddings were taken at, those embeddings and its
        #: same-context baseline similarities
        self.original_cache: dict[int, tuple[int, dict[str, torch.Tensor], dict[str, float]]] = {}
        #: per track: its last measured check that passed on a rung a check can be carried on
        self.last_check: dict[int, _Check] = {}

    def describe(self) -> dict[str, object]:
        """The report's ``privacy`` entry: the ladder and each checker with its threshold."""
        return {"ladder": list(self.ladder), "checkers": [c.describe() for c in self.checkers]}

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
            if not checkable(face.record.points):
                face.rung, face.error = last, face.record.failed or "no face points to check it with"
        # 1. which faces carry a check (module docstring: the re-check rule), which are measured
        carried, measured, anchored = self._plan(pending, frame_indices)
        out, weakened = self._carry(frames, out, carried, frame_indices)
        # 2. the ladder on the measured faces (and the carried ones whose redaction weakened)
        out = self._ladder(frames, out, measured + weakened, frame_indices)
        # 3. faces anchored to a face measured in this chunk: carried where it passed with headroom
        for face in anchored:  # each stays on the rung its track had when the chunk began, like its anchor
            assert face.anchor is not None
            ref = self._check_of(face.anchor, frames, out, frame_indices)
            face.carried = ref if ref is not None and self._carries(face, ref, frame_indices) else None
        uncarried = [f for f in anchored if f.carried is None]
        out, weakened = self._carry(frames, out, [f for f in anchored if f.carried is not None], frame_indices)
        return self._ladder(frames, out, uncarried + weakened, frame_indices)

    def _plan(self, faces: list[_Face], frame_indices: list[int]) -> tuple[list[_Face], list[_Face], list[_Face]]:
        """Split a chunk's faces (re-check rule, module docstring): (carried: a track's last check
        holds for them; measured; anchored: they may carry the check of a face of their track
        measured earlier in this chunk, decided once it is measured). In frame order per track."""
        carried: list[_Face] = []
        measured: list[_Face] = []
        anchored: list[_Face] = []
        anchors: dict[int, _Face] = {}
        for face in sorted(faces, key=lambda f: frame_indices[f.row]):
            track = face.record.track_id
            ref = self.last_check.get(track)
            anchor = anchors.get(track)
            if anchor is None and ref is not None and self._carries(face, ref, frame_indices):
                face.carried = ref
                carried.append(face)
            elif anchor is not None and self._may_carry(face, anchor, frame_indices):
                face.anchor = anchor
                anchored.append(face)
            else:
                measured.append(face)
                if track >= 0 and self.ladder[face.rung] in CARRY_RUNGS:
                    anchors[track] = face
                else:
                    anchors.pop(track, None)
        return carried, measured, anchored

    def _carries(self, face: _Face, ref: _Check, frame_indices: list[int]) -> bool:
        """The re-check rule: ``face`` carries the measured check ``ref`` of its track."""
        return (face.record.track_id >= 0 and self.ladder[face.rung] in CARRY_RUNGS and face.rung == ref.rung
                and ref.headroom >= CARRY_HEADROOM and 0 < frame_indices[face.row] - ref.frame < RECHECK_FRAMES
                and steady(face.record.box, face.record.points, ref.box, ref.points))

    def _may_carry(self, face: _Face, anchor: _Face, frame_indices: list[int]) -> bool:
        """The rule's part that is known before ``anchor`` (of the same track, this chunk) is measured."""
        return (face.rung == anchor.rung and self.ladder[face.rung] in CARRY_RUNGS
                and 0 < frame_indices[face.row] - frame_indices[anchor.row] < RECHECK_FRAMES
                and steady(face.record.box, face.record.points, anchor.record.box, anchor.record.points))

    def _check_of(self, face: _Face, frames: torch.Tensor, out: torch.Tensor, frame_indices: list[int]
                  ) -> _Check | None:
        """A measured face's check, where it passed on a rung a check can be carried on."""
        if face.error is not None or not face.similarities or self.ladder[face.rung] not in CARRY_RUNGS:
            return None
        box = np.asarray(face.record.box, np.float32).copy()
        return _Check(frame_indices[face.row], face.rung, box, np.asarray(face.record.points, np.float32).copy(),
                      headroom(face.similarities, self.checkers, face.baselines, self._is_baseline(face)),
                      change(frames, out, face.row, box))

    def _carry(self, frames: torch.Tensor, out: torch.Tensor, faces: list[_Face], frame_indices: list[int]
               ) -> tuple[torch.Tensor, list[_Face]]:
        """Redact carried faces on their track's rung and record them as carried (not measured);
        returns the output and the faces whose redaction changed their box less than
        :data:`CARRY_CHANGE` of the measured face's (redacted, left to be measured)."""
        groups: dict[int, list[_Face]] = {}
        for face in faces:
            groups.setdefault(face.rung, []).append(face)
        for rung, group in sorted(groups.items()):
            out = self._apply_rung(self.ladder[rung], frames, out, group)
        weakened = []
        for face in faces:
            ref = face.carried
            assert ref is not None
            if change(frames, out, face.row, face.record.box) < CARRY_CHANGE * ref.change:
                face.carried, face.applied = None, True
                weakened.append(face)
                continue
            self.report.add_privacy(face.record.track_id, frame_indices[face.row], self.ladder[face.rung], {}, True,
                                    None, {}, carried_from=ref.frame)
        return out, weakened

    def _ladder(self, frames: torch.Tensor, out: torch.Tensor, pending: list[_Face], frame_indices: list[int]
                ) -> torch.Tensor:
        """Check ``pending`` faces and climb the ladder until each passes; each track's last
        measured check is kept for the re-check rule."""
        if not pending:
            return out
        measured = list(pending)
        last = len(self.ladder) - 1
        to_embed = [f for f in pending if f.rung != last]
        for k, face in enumerate(to_embed):
            face.orig = k
        # the originals (and baselines) not cached yet are embedded with the first round's outputs
        originals: dict[str, torch.Tensor] | None = None if to_embed else {}
        while pending:
            at_rung: dict[int, list[_Face]] = {}
            for face in pending:
                at_rung.setdefault(face.rung, []).append(face)
            for rung, group in sorted(at_rung.items()):
                out = self._apply_rung(self.ladder[rung], frames, out, [f for f in group if not f.applied])
            for face in self._flatten(at_rung):
                face.applied = False
            pending = []
            to_check = [f for f in self._flatten(at_rung) if self.ladder[f.rung] != "solid"]
            for face in self._flatten(at_rung):
                if self.ladder[face.rung] == "solid":
                    self._done(face, frame_indices, passed=True)
            if not to_check:
                break
            if originals is None:
                originals, sims = self._first_round(frames, out, to_embed, to_check, frame_indices)
            else:
                sims = self._similarities(out, to_check, originals)
            for face, row in zip(to_check, sims, strict=True):
                if face.rung == last:  # its original could not be embedded (_first_round): fail closed
                    pending.append(face)
                    continue
                if row is None:
                    face.error = "the output face could not be checked"
                    face.rung = len(self.ladder) - 1
                    pending.append(face)
                    continue
                face.similarities = row
                if passes(row, self.checkers, face.baselines, self._is_baseline(face)):
                    self._done(face, frame_indices, passed=True)
                else:
                    face.rung = self._next_rung(face)
                    pending.append(face)
        for face in sorted(measured, key=lambda f: frame_indices[f.row]):  # the latest check of each track wins
            track = face.record.track_id
            kept = self.last_check.get(track)
            if track < 0 or (kept is not None and kept.frame > frame_indices[face.row]):
                continue
            check = self._check_of(face, frames, out, frame_indices)
            if check is not None:
                self.last_check[track] = check
            else:
                self.last_check.pop(track, None)
        return out

    def _is_baseline(self, face: _Face) -> bool:
        """Whether the face's rung leaves only its context (:data:`CONTEXT_ONLY_RUNGS`; a black
        oval from :data:`BLACK_OVAL_MIN_WIDTH`)."""
        rung = self.ladder[face.rung]
        if rung == "face_solid":
            return 2.0 * float(self._region(face)[0, 2]) >= BLACK_OVAL_MIN_WIDTH
        return rung in CONTEXT_ONLY_RUNGS

    @staticmethod
    def _region(face: _Face) -> torch.Tensor:
        """The face's region [1,5] (:func:`~reenact.blend.redact.face_regions`); faces without
        five usable points: from the box alone."""
        box = torch.from_numpy(np.asarray(face.record.box, np.float32).reshape(1, 4))
        pts = np.asarray(face.record.points, np.float32)
        return face_regions(box, torch.from_numpy(pts)[None] if pts.shape == (5, 2) else None)

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
        """Each checker's embeddings of the original faces, one row per face in ``faces``; each
        face's same-context baselines go into its ``baselines`` (:meth:`_need_originals`; the
        ladder embeds them with its first round's outputs instead, :meth:`_first_round`)."""
        need, where = self._need_originals(faces, frame_indices)
        fresh = self._embed(frames, need) if need else {}
        fresh_base = self._baselines(frames, need, fresh) if need else []
        return self._take_originals(faces, need, where, fresh, fresh_base, frame_indices)

    def _need_originals(self, faces: list[_Face], frame_indices: list[int]) -> tuple[list[_Face], dict[int, int]]:
        """Which of ``faces`` need their original embedded (``need``), and for each face not
        cached the row of ``need`` it uses (by ``id(face)``).

        A person's identity does not change within a track, so a track's original (and its
        baseline) is embedded again only every :data:`ORIGINAL_REFRESH_FRAMES` frames (the pose
        does change, hence the refresh), counted across chunks and within one: a track's faces
        in one batch share the embedding of its earliest face that needs one; untracked faces
        are embedded every time. Embeddings that failed (NaN) are never kept.
        """
        need: list[_Face] = []
        where: dict[int, int] = {}  # id(face) -> its row of need (its own or the one it shares)
        fresh_at: dict[int, tuple[int, int]] = {}  # track -> (frame, row of need) embedded in this batch
        for face in sorted(faces, key=lambda f: frame_indices[f.row]):
            track, index = face.record.track_id, frame_indices[face.row]
            if self._cached(track, index):
                continue
            shared = fresh_at.get(track)
            if track >= 0 and shared is not None and 0 <= index - shared[0] < ORIGINAL_REFRESH_FRAMES:
                where[id(face)] = shared[1]
                continue
            where[id(face)] = len(need)
            fresh_at[track] = (index, len(need))
            need.append(face)
        return need, where

    def _take_originals(self, faces: list[_Face], need: list[_Face], where: dict[int, int],
                        fresh: dict[str, torch.Tensor], fresh_base: list[dict[str, float]],
                        frame_indices: list[int]) -> dict[str, torch.Tensor]:
        """The originals of ``faces`` (one row each) from the cache and the ones just embedded
        (``fresh``, ``fresh_base``: rows of ``need``), which go into the cache."""
        rows: dict[str, list[torch.Tensor]] = {c.name: [] for c in self.checkers}
        for face in faces:
            track = face.record.track_id
            if id(face) in where:
                k = where[id(face)]
                codes = {c.name: fresh[c.name][k] for c in self.checkers}
                face.baselines = fresh_base[k]
                if need[k] is not face and need[k].error is not None:  # its shared original failed: fail closed
                    face.rung, face.error = len(self.ladder) - 1, need[k].error
                if track >= 0 and all(bool(torch.isfinite(v).all()) for v in codes.values()):
                    self.original_cache[track] = (frame_indices[need[k].row], codes, face.baselines)
            else:
                _frame, codes, face.baselines = self.original_cache[track]
            for name, code in codes.items():
                rows[name].append(code)
        return {name: torch.stack(v) for name, v in rows.items()}

    def _first_round(self, frames: torch.Tensor, out: torch.Tensor, faces: list[_Face], to_check: list[_Face],
                     frame_indices: list[int]) -> tuple[dict[str, torch.Tensor], list[dict[str, float] | None]]:
        """The ladder's first round in one forward per recogniser (:func:`embed_jobs`): the
        originals of ``faces`` that are not cached, their same-context baselines and the output
        faces ``to_check``; returns the originals of ``faces`` (as :meth:`_originals`) and the
        similarities of ``to_check`` (as :meth:`_similarities`).

        When that forward raises, each part is embedded on its own, as :meth:`_originals` and
        :meth:`_similarities` do (fail closed: a face whose original cannot be embedded ends
        on ``solid``).
        """
        need, where = self._need_originals(faces, frame_indices)
        try:
            with self.report.timer("privacy"):
                jobs = [self._job(out, to_check)] + ([self._job(frames, need)] if need else [])
                windows = self._windows(frames, need) if need else None
                if windows is not None:
                    jobs.append(windows)
                embedded = embed_jobs(self.checkers, jobs)
                fresh = embedded[1] if need else {}
                fresh_base = (self._baseline_rows(embedded[2], fresh, len(need)) if windows is not None
                              else [{} for _f in need])
        except Exception as exc:  # noqa: BLE001 - each part again on its own, failing closed per face
            log.warning("privacy check: one forward for the round failed (%s); its parts are embedded apart", exc)
            originals = self._originals(frames, faces, frame_indices)
            checked = [f for f in to_check if f.rung != len(self.ladder) - 1]
            rows = iter(self._similarities(out, checked, originals) if checked else [])
            return originals, [None if f.rung == len(self.ladder) - 1 else next(rows) for f in to_check]
        originals = self._take_originals(faces, need, where, fresh, fresh_base, frame_indices)
        return originals, self._rows(embedded[0], to_check, originals)  # (no face failed: the forward ran)

    @staticmethod
    def _job(images: torch.Tensor, faces: list[_Face]) -> ChipJob:
        """The chips of ``faces`` (their rows and points) in ``images`` (frames or the output)."""
        index = torch.tensor([f.row for f in faces], dtype=torch.long, device=images.device)
        points = (torch.from_numpy(np.stack([f.record.points for f in faces])).float() if faces
                  else torch.zeros((0, 5, 2)))
        return ChipJob(images, index, points.to(images.device))

    def _windows(self, frames: torch.Tensor, faces: list[_Face]) -> ChipJob | None:
        """The same-context baselines' chips: each face's window of its original frame with the
        face filled flat (:func:`~reenact.pipeline.baseline.flat_windows`); None when they
        cannot be made (the faces are then judged at the operating point alone)."""
        try:
            faces_job = self._job(frames, faces)
            boxes = torch.from_numpy(np.stack([f.record.box for f in faces])).float()
            windows, local = flat_windows(frames, faces_job.index, boxes, faces_job.points)
        except Exception as exc:  # noqa: BLE001 - no baseline: the operating point alone decides
            log.warning("privacy check: the same-context baseline could not be made (%s); the faces are "
                        "judged at the operating point alone", exc)
            return None
        return ChipJob(windows, torch.arange(len(faces), device=frames.device), local)

    def _baseline_rows(self, windows: dict[str, torch.Tensor], originals: dict[str, torch.Tensor],
                       n: int) -> list[dict[str, float]]:
        """Per face, each checker's similarity of its baseline (``windows``' embeddings) to its
        original (``originals``, the same rows); NaN similarities are left out."""
        sims = {c.name: (F.normalize(windows[c.name], dim=1)
                         * F.normalize(originals[c.name].to(windows[c.name].device), dim=1)).sum(dim=1).tolist()
                for c in self.checkers}
        return [{name: float(v[k]) for name, v in sims.items() if np.isfinite(v[k])} for k in range(n)]

    def _baselines(self, frames: torch.Tensor, faces: list[_Face],
                   originals: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """Per face, each checker's similarity of its same-context baseline (the original frame
        with the face filled flat) to its original. A baseline that cannot be made leaves the
        face with none: it is then judged at the operating point alone (the stricter rule)."""
        windows = self._windows(frames, faces)
        if windows is None:
            return [{} for _f in faces]
        try:
            with self.report.timer("privacy"):
                return self._baseline_rows(embed_jobs(self.checkers, [windows])[0], originals, len(faces))
        except Exception as exc:  # noqa: BLE001 - no baseline: the operating point alone decides
            log.warning("privacy check: the same-context baseline could not be embedded (%s); the faces are "
                        "judged at the operating point alone", exc)
            return [{} for _f in faces]

    def _cached(self, track: int, frame_index: int) -> bool:
        entry = self.original_cache.get(track)
        return track >= 0 and entry is not None and 0 <= frame_index - entry[0] < ORIGINAL_REFRESH_FRAMES

    def _embed(self, frames: torch.Tensor, faces: list[_Face]) -> dict[str, torch.Tensor]:
        """Each checker's embeddings of the original faces (None when that fails: fail closed)."""
        try:
            with self.report.timer("privacy"):
                return embed_jobs(self.checkers, [self._job(frames, faces)])[0]
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
        check raised or gave no number); every checker's chips in one forward per recogniser."""
        try:
            with self.report.timer("privacy"):
                embedded = embed_jobs(self.checkers, [self._job(out, faces)])[0]
        except Exception as exc:  # noqa: BLE001 - fail closed: the faces are redacted
            log.warning("privacy check failed (%s); the faces are redacted", exc)
            return [None] * len(faces)
        return self._rows(embedded, faces, originals)

    def _rows(self, embedded: dict[str, torch.Tensor], faces: list[_Face],
              originals: dict[str, torch.Tensor]) -> list[dict[str, float] | None]:
        """Per face, each checker's cosine of its output's embedding (``embedded``, a row per
        face) with its own original (row ``face.orig`` of ``originals``); None where one is not
        a number."""
        sims = {}
        for c in self.checkers:
            emb = embedded[c.name]
            ref = originals[c.name][[f.orig for f in faces]].to(emb.device)
            # each face with its own original: the diagonal, never the [F,F] matrix's first row
            sims[c.name] = F.cosine_similarity(emb.float(), ref.float(), dim=1).tolist()
        rows: list[dict[str, float] | None] = []
        for k in range(len(faces)):
            row = {name: float(v[k]) for name, v in sims.items()}
            rows.append(None if any(not np.isfinite(v) for v in row.values()) else row)
        return rows

    def _apply_rung(self, rung: str, frames: torch.Tensor, out: torch.Tensor, group: list[_Face]) -> torch.Tensor:
        if rung == "synthetic":
            return out
        if rung in ("redraw", "grown_mask"):
            return self._render(rung, frames, out, group)
        shape = "box" if rung.startswith("head_") or rung == "solid" else "ellipse"
        method = {"fill": "flat", "face_solid": "solid"}.get(rung, rung.removeprefix("head_"))
        for face in group:  # out is apply's own copy: redacted in place
            region = self._region(face)
            # fill: the original's mean colour (the baseline), whatever the face's earlier rungs pasted
            redact_faces_(out[face.row], region, method, shape, frames[face.row] if rung == "fill" else None)
        return out

    def _render(self, rung: str, frames: torch.Tensor, out: torch.Tensor, group: list[_Face]) -> torch.Tensor:
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
        return self.render(frames, out, [(f.row, f.record) for f, _c in ok], [c for _f, c in ok], rung == "grown_mask")

    def _done(self, face: _Face, frame_indices: list[int], passed: bool) -> None:
        rung = self.ladder[face.rung]
        record = face.record
        if record.track_id >= 0:
            self.track_rung[record.track_id] = max(self.track_rung.get(record.track_id, 0), face.rung)
        # solid is not checked (nothing is left to recognise): what the face-frame reports is the
        # written output's check, so the failed check that led there is not kept
        sims = {} if rung == "solid" else face.similarities
        reason = face.error or record.failed
        if (reason is None and rung in CONTEXT_ONLY_RUNGS and sims
                and not passes(sims, self.checkers, face.baselines)):
            reason = f"{rung}: the face's context alone links, and this is no more than that context"
        self.report.add_privacy(record.track_id, frame_indices[face.row], rung, sims, passed and face.error is None,
                                reason, margins(sims, self.checkers, face.baselines) if sims else {})
