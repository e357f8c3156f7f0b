"""The privacy checkers and the check rule.

* :class:`Checker`: one identity model with one chip (``tight``, ``loose``) and the privacy
  threshold an output face must stay below; :func:`checkers_for` makes them per model with
  the calibrated thresholds (:mod:`reenact.faces.privacy_thresholds`); :func:`run_recognisers`
  names the models a run has (dlib's descriptor always among them).
* :func:`passes`: **the check rule**, the one place a face's similarities are compared with
  the thresholds (used by the ladder, :mod:`reenact.pipeline.privacy.guard`).
* :func:`check_identities` and :func:`count_faces`: runs without the ladder (reenact): the
  similarity of each replaced face to what its policy compares it with is reported, and every
  face counted; nothing is redacted.

Conventions: frames uint8 ``[T,H,W,3]`` RGB; points ``[N,5,2]`` frame pixels; embeddings
float ``[F,D]`` unit rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from reenact.errors import ShapeError
from reenact.faces import cosine_similarity
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

Embed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""frames uint8 [T,H,W,3], frame index long [F], points float [F,5,2] -> codes float [F,D]."""


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


def passes(similarities: dict[str, float], checkers: list[Checker]) -> bool:
    """The check rule: a face passes when every checker sees its similarity to the original
    below that checker's threshold (``similarities``: by :attr:`Checker.name`)."""
    return all(similarities[c.name] < c.threshold for c in checkers)


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
