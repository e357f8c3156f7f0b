"""The privacy checkers and the check rule.

* :class:`Checker`: one identity model with one chip (``tight``, ``loose``), the attacker's
  operating point on it and the same-context allowance; :func:`checkers_for` makes them per
  model from the calibration (:data:`reenact.faces.privacy_thresholds.OPERATING_POINTS`);
  :func:`run_recognisers` names the models a run has (dlib's descriptor always among them).
* :func:`embed_jobs`: every chip a round of the check needs (originals, same-context
  baselines, outputs; every checker's chip) in one forward per recogniser, in slices of at
  most :data:`CHECK_BATCH` chips.
* :func:`passes`: **the check rule**, the one place a face's similarities are compared with
  the checkers' limits (used by the ladder, :mod:`reenact.pipeline.privacy.guard`): a face
  passes when each checker sees it below the operating point, or, where the face's context
  alone (its original frame with the face filled flat: the *baseline*) already reaches that
  point, below that baseline (plus the checker's allowance: 0 for every calibrated one, see
  :class:`~reenact.faces.privacy_thresholds.OperatingPoint`). There the recogniser cannot tell
  a redacted face from its context, so only a face no more similar than the context alone is
  known to add nothing to it; the ``fill`` rung, which *is* the baseline, passes by
  construction.
* :func:`check_identities` and :func:`count_faces`: runs without the ladder (reenact): the
  similarity of each replaced face to what its policy compares it with is reported, and every
  face counted; nothing is redacted.

Conventions: frames uint8 ``[T,H,W,3]`` RGB; points ``[N,5,2]`` frame pixels; embeddings
float ``[F,D]`` unit rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from reenact.errors import ShapeError
from reenact.faces import cosine_similarity
from reenact.faces.identity import DlibFaceEncoder, IdentityEncoder, OnnxArcFaceEncoder
from reenact.faces.privacy_thresholds import (
    CHIPS,
    Chip,
    chip_crops,
    embed_with_chip,
    operating_point,
)
from reenact.pipeline.identity import IdentityPolicy, TrackIdentity
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord, FrameSlot

Embed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""frames uint8 [T,H,W,3], frame index long [F], points float [F,5,2] -> codes float [F,D]."""


@dataclass(frozen=True)
class Checker:
    """One identity model with one chip: the attacker's operating point on it (``threshold``,
    with its ``source`` and ``false_match_rate``) and the same-context ``allowance``."""

    encoder: IdentityEncoder
    chip: Chip
    threshold: float
    source: str
    allowance: float = 0.0
    false_match_rate: float | None = None

    @property
    def name(self) -> str:
        return f"{self.encoder.name}/{self.chip}"

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Conventions: frames uint8 [T,H,W,3]; index long [F]; points float [F,5,2]; returns [F,D]."""
        return embed_with_chip(self.encoder, frames, index, points, self.chip)

    def limit(self, baseline: float | None) -> float:
        """The similarity a face must stay below: the operating point, or where the face's
        ``baseline`` (context alone) reaches it, the baseline plus the allowance."""
        if baseline is None or not math.isfinite(baseline):
            return self.threshold
        return max(self.threshold, baseline + self.allowance)

    def describe(self) -> dict[str, object]:
        return {"model": self.encoder.name, "chip": self.chip, "operating_point": self.threshold,
                "source": self.source, "false_match_rate": self.false_match_rate, "allowance": self.allowance}

    def crops(self, images: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """This checker's chips of faces, as :meth:`embed` cuts them before the recogniser runs
        (only for recognisers that cut their own chips with their template: :func:`template_chips`).

        Conventions: images uint8 [T,H,W,3]; index long [F]; points float [F,5,2] pixels of
        ``images``; returns float [F,3,S,S] in [-1,1] (S: the recogniser's ``crop_size``).
        """
        return chip_crops(self.encoder, images, index, points, self.chip)


#: most chips :func:`embed_jobs` cuts and embeds at once (dlib's are float [3,150,150], 270 KB
#: each: 16 hold 4.3 MB; dlib itself runs 8 per forward, padding only the last slice's rest)
CHECK_BATCH = 16


@dataclass(frozen=True)
class ChipJob:
    """Faces to embed: rows ``index`` (long [F]) of ``images`` (uint8 [T,H,W,3]: frames, the
    composited output or the baseline's windows) at ``points`` (float [F,5,2], their pixels)."""

    images: torch.Tensor
    index: torch.Tensor
    points: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])


def template_chips(encoder: IdentityEncoder) -> bool:
    """Whether ``encoder.embed`` is ``embed_aligned`` of the chips cut with its own template
    (dlib's descriptor and the ArcFace family): then its tight chips are batched with the loose
    ones; any other recogniser's tight chips go through its own ``embed``."""
    return isinstance(encoder, (DlibFaceEncoder, OnnxArcFaceEncoder))


def embed_jobs(checkers: list[Checker], jobs: list[ChipJob]) -> list[dict[str, torch.Tensor]]:
    """Per job, each checker's embeddings of its faces (by :attr:`Checker.name`, float [F,D]),
    as :meth:`Checker.embed` gives them; every chip of every job and checker of one recogniser
    goes through one ``embed_aligned`` call per :data:`CHECK_BATCH` chips, so a round of the
    privacy check runs one forward per recogniser, not one per checker and kind of chip.
    """
    out: list[dict[str, torch.Tensor]] = [{} for _j in jobs]
    by_encoder: dict[int, list[tuple[Checker, int]]] = {}
    for c in checkers:
        for k, job in enumerate(jobs):
            if c.chip == "tight" and not template_chips(c.encoder):
                out[k][c.name] = c.embed(job.images, job.index, job.points)  # its own cut
            else:
                by_encoder.setdefault(id(c.encoder), []).append((c, k))
    for pieces in by_encoder.values():
        encoder = pieces[0][0].encoder
        parts: dict[tuple[str, int], list[torch.Tensor]] = {(c.name, k): [] for c, k in pieces}
        # every (checker, job) piece's rows, cut into slices of at most CHECK_BATCH chips
        slices: list[list[tuple[Checker, int, slice]]] = [[]]
        room = CHECK_BATCH
        for c, k in pieces:
            start, stop = 0, len(jobs[k])
            while start < stop:
                if room == 0:
                    slices.append([])
                    room = CHECK_BATCH
                take = min(room, stop - start)
                slices[-1].append((c, k, slice(start, start + take)))
                start, room = start + take, room - take
        for part in slices:
            if not part:
                continue
            crops = torch.cat([c.crops(jobs[k].images, jobs[k].index[s], jobs[k].points[s]) for c, k, s in part])
            codes = encoder.embed_aligned(crops)
            at = 0
            for c, k, s in part:
                n = s.stop - s.start
                parts[(c.name, k)].append(codes[at : at + n])
                at += n
        for c, k in pieces:
            got = parts[(c.name, k)]
            out[k][c.name] = torch.cat(got) if got else torch.zeros((0, encoder.dim), device=jobs[k].images.device)
    return out


def checkers_for(encoders: list[IdentityEncoder], override: float | None = None) -> list[Checker]:
    """A checker per identity model (deduplicated by name) and chip, at its calibrated
    operating point, or at ``override`` (``deidentify.privacy_threshold``) for all (the
    calibrated allowance stays)."""
    out, seen = [], set()
    for encoder in encoders:
        if encoder.name in seen:
            continue
        seen.add(encoder.name)
        for chip in CHIPS:
            point = operating_point(encoder.name, chip)
            if override is not None:
                out.append(Checker(encoder, chip, float(override), "deidentify.privacy_threshold", point.allowance))
            else:
                out.append(Checker(encoder, chip, point.threshold, point.provenance, point.allowance,
                                   point.false_match_rate))
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


#: how far above its baseline a face that *is* its baseline (the ``fill`` rung) may be measured
#: and still pass by construction: what differs between the written fill and the baseline's
#: window (other faces' redactions in the chip, a baseline up to ORIGINAL_REFRESH_FRAMES old).
#: On the fixture clips (``--method blur`` and synthetic, 12 frames, ``--audit``) fill faces
#: sat at most 0.0040 above their baseline on friends and 0.0084 on crowd; a fill that is
#: further off (a synthetic face left in its feathered edge, a baseline from a moved face) is
#: measured like any rung and climbs to the head box
FILL_TOLERANCE = 0.015


def _by_construction(c: Checker, sim: float, baseline: float | None) -> bool:
    """A fill (or black-filled) face, the baseline itself, whose context alone reaches ``c``'s
    operating point, measured within :data:`FILL_TOLERANCE` of that baseline."""
    return (baseline is not None and math.isfinite(baseline) and baseline >= c.threshold
            and sim <= baseline + FILL_TOLERANCE)


def _clears(c: Checker, sim: float, baseline: float | None, is_baseline: bool) -> bool:
    """One checker's verdict (the rule, module docstring): below its limit, or, for a face that
    *is* its own baseline (the ``fill`` rung), :func:`_by_construction`."""
    return sim < c.limit(baseline) or (is_baseline and _by_construction(c, sim, baseline))


def passes(similarities: dict[str, float], checkers: list[Checker],
           baselines: dict[str, float] | None = None, is_baseline: bool = False) -> bool:
    """The check rule (module docstring): every checker sees the face below its limit
    (``similarities`` and ``baselines``: by :attr:`Checker.name`; no baseline: the operating
    point alone). ``is_baseline``: the face is its same-context baseline itself (the ``fill``
    rung: the face-shaped region filled with the original's mean colour, what the baseline
    embeds; or ``face_solid``, the region black, which keeps even less of the face), so where context alone reaches a checker's operating point it passes that checker
    by construction (no redaction can be less similar than the context it leaves), provided
    its measured similarity is within :data:`FILL_TOLERANCE` of that baseline."""
    base = baselines or {}
    return all(_clears(c, similarities[c.name], base.get(c.name), is_baseline) for c in checkers)


def headroom(similarities: dict[str, float], checkers: list[Checker],
             baselines: dict[str, float] | None = None, is_baseline: bool = False) -> float:
    """How far below its limit (:meth:`Checker.limit`, as :func:`passes` applies it) the face
    is on the checker where it comes closest: positive when it passes. The re-check rule of
    :mod:`reenact.pipeline.privacy.guard` carries a check only from a face with enough of it.
    A checker a baseline face (``is_baseline``) passes by construction leaves it unbounded
    headroom (its output is the baseline, however the similarity moves)."""
    base = baselines or {}
    rooms = [math.inf if is_baseline and _by_construction(c, similarities[c.name], base.get(c.name))
             else c.limit(base.get(c.name)) - similarities[c.name] for c in checkers]
    return min(rooms)


def margins(similarities: dict[str, float], checkers: list[Checker],
            baselines: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Per checker, how far below the operating point and below the baseline the face is
    (positive: below; ``baseline`` only where the face has one)."""
    base = baselines or {}
    out: dict[str, dict[str, float]] = {}
    for c in checkers:
        sim = similarities[c.name]
        row = {"operating_point": c.threshold - sim}
        if c.name in base and math.isfinite(base[c.name]):
            row["baseline"] = base[c.name] - sim
        out[c.name] = row
    return out


def checkable(points: np.ndarray) -> bool:
    """Whether a face's five points can align a chip (finite, eyes apart)."""
    pts = np.asarray(points, dtype=np.float64)
    return bool(pts.shape == (5, 2) and np.isfinite(pts).all() and np.linalg.norm(pts[1] - pts[0]) >= 1.0)


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


def count_faces(slots: list[FrameSlot], report: RunReport) -> None:
    """Count every face of ``slots`` once in the report (a run without the ladder: replaced or
    left as it was; untracked detections are not faces of a track)."""
    for slot in slots:
        for f in slot.faces:
            if f.track_id == -1:
                continue
            track = report.tracks[f.track_id]
            track.frames += 1
            if f.failed is None:
                track.replaced += 1
                report.count("faces_replaced")
