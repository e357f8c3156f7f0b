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
hairline; :mod:`reenact.blend.redact`) -> ``head_blur`` / ``head_pixelate`` (the head box, the
region's bounds, never wider than the head; ``deidentify.head_redaction``) -> ``solid`` (the
head box filled black: the last rung, which leaves nothing to check).
``--method blur`` starts on ``blur``, ``--method pixelate`` on ``pixelate`` (the face-shaped
region pixelated), ``--method solid`` on ``solid``. Faces that could not be synthesized (no
identity, refused by the blender, outside the frame, too small, untracked) start on the first
redaction rung; a face whose check raises, or that has no points to check it with, goes to
``solid``. :func:`untracked_faces` makes records of the detections no track covers.

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

from reenact.blend.redact import face_regions, redact_faces_
from reenact.errors import ShapeError
from reenact.faces import FaceDetections
from reenact.faces.boxes import box_iou
from reenact.pipeline.baseline import flat_windows
from reenact.pipeline.privacy.checkers import Checker, checkable, margins, passes
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
#: the redaction rungs: face-shaped first, then the head box, then the head box filled
REDACTION_RUNGS = ("blur", "pixelate", "head_blur", "head_pixelate", "solid")

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
    if method == "synthetic":
        return ("synthetic",) + (("redraw",) if redraws > 0 else ()) + ("grown_mask", "blur", head, "solid")
    if method == "blur":
        return ("blur", head, "solid") if head == "head_blur" else ("blur", head, "head_blur", "solid")
    if method == "pixelate":
        return ("pixelate", "head_pixelate", "head_blur", "solid")
    if method == "solid":
        return ("solid",)
    raise ShapeError(f"unknown deidentify method {method!r}")


#: frames between two embeddings of a track's original face (see PrivacyGuard._originals)
ORIGINAL_REFRESH_FRAMES = 8


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
        to_embed = [f for f in pending if f.rung != last]
        for k, face in enumerate(to_embed):
            face.orig = k
        originals = self._originals(frames, to_embed, frame_indices) if to_embed else {}
        while pending:
            at_rung: dict[int, list[_Face]] = {}
            for face in pending:
                at_rung.setdefault(face.rung, []).append(face)
            for rung, group in sorted(at_rung.items()):
                out = self._apply_rung(self.ladder[rung], frames, out, group)
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
                if passes(row, self.checkers, face.baselines):
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
        """Each checker's embeddings of the original faces, one row per face in ``faces``; each
        face's same-context baselines go into its ``baselines``.

        A person's identity does not change within a track, so a track's original (and its
        baseline) is embedded again only every :data:`ORIGINAL_REFRESH_FRAMES` frames (the pose
        does change, hence the refresh); untracked faces are embedded every time. Embeddings
        that failed (NaN) are never kept.
        """
        need = [f for f in faces if not self._cached(f.record.track_id, frame_indices[f.row])]
        fresh = self._embed(frames, need) if need else {}
        fresh_base = self._baselines(frames, need, fresh) if need else []
        where = {id(f): k for k, f in enumerate(need)}
        rows: dict[str, list[torch.Tensor]] = {c.name: [] for c in self.checkers}
        for face in faces:
            track = face.record.track_id
            if id(face) in where:
                k = where[id(face)]
                codes = {c.name: fresh[c.name][k] for c in self.checkers}
                face.baselines = fresh_base[k]
                if track >= 0 and all(bool(torch.isfinite(v).all()) for v in codes.values()):
                    self.original_cache[track] = (frame_indices[face.row], codes, face.baselines)
            else:
                _frame, codes, face.baselines = self.original_cache[track]
            for name, code in codes.items():
                rows[name].append(code)
        return {name: torch.stack(v) for name, v in rows.items()}

    def _baselines(self, frames: torch.Tensor, faces: list[_Face],
                   originals: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """Per face, each checker's similarity of its same-context baseline (the original frame
        with the face filled flat) to its original. A baseline that cannot be made leaves the
        face with none: it is then judged at the operating point alone (the stricter rule)."""
        try:
            index = torch.tensor([f.row for f in faces], dtype=torch.long, device=frames.device)
            boxes = torch.from_numpy(np.stack([f.record.box for f in faces])).float()
            points = torch.from_numpy(np.stack([f.record.points for f in faces])).float()
            with self.report.timer("privacy"):
                windows, local = flat_windows(frames, index, boxes, points.to(frames.device))
                window_index = torch.arange(len(faces), device=frames.device)
                sims = {c.name: (F.normalize(c.embed(windows, window_index, local), dim=1)
                                 * F.normalize(originals[c.name].to(windows.device), dim=1)).sum(dim=1).tolist()
                        for c in self.checkers}
        except Exception as exc:  # noqa: BLE001 - no baseline: the operating point alone decides
            log.warning("privacy check: the same-context baseline could not be embedded (%s); the faces are "
                        "judged at the operating point alone", exc)
            return [{} for _f in faces]
        return [{name: float(v[k]) for name, v in sims.items() if np.isfinite(v[k])} for k in range(len(faces))]

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
                    # each face with its own original: the diagonal, never the [F,F] matrix's first row
                    sims[c.name] = F.cosine_similarity(emb.float(), ref.float(), dim=1).tolist()
        except Exception as exc:  # noqa: BLE001 - fail closed: the faces are redacted
            log.warning("privacy check failed (%s); the faces are redacted", exc)
            return [None] * len(faces)
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
        method = rung.removeprefix("head_")
        for face in group:  # out is apply's own copy: redacted in place
            box = torch.from_numpy(np.asarray(face.record.box, np.float32).reshape(1, 4))
            pts = np.asarray(face.record.points, np.float32)
            # faces without five usable points: the region from the box alone
            region = face_regions(box, torch.from_numpy(pts)[None] if pts.shape == (5, 2) else None)
            redact_faces_(out[face.row], region, method, shape)
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
        self.report.add_privacy(record.track_id, frame_indices[face.row], rung, sims, passed and face.error is None,
                                face.error or record.failed, margins(sims, self.checkers, face.baselines) if sims else {})
