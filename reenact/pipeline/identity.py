"""Identity policies: which identity code each track gets, and what its output is checked against.

One policy per run, picked in one place (:func:`make_policy`, from the run plan's policy kind):

* :class:`TargetIdentity` (``reenact``): every track gets the target photo's identity; an
  output face is compared with the target; a low similarity is reported, never redacted.
* :class:`SyntheticIdentities` (``deidentify``): each track gets a synthetic identity drawn
  from a seeded candidate source and kept only when it is far from the track's original
  face; a person seen again (e.g. after a scene cut) keeps the identity they had; an output
  face is compared with the original, and one still too similar fails the privacy check.

The policies work on plain tensors: the candidate source and the original face's embedding
are callables, so they are testable without a model pack (:class:`GeneratorCandidates`
is the pack-backed source).

Conventions: identity codes are float ``[D]`` unit vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from reenact.errors import ConfigError, ShapeError
from reenact.faces import cosine_similarity, ffhq_template
from reenact.packs import LoadedPack
from reenact.pipeline.plan import RunPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TrackIdentity:
    """The identity code given to one track, and what was checked about it (frozen: a redraw
    makes a new one, :meth:`IdentityPolicy.redraw`)."""

    code: torch.Tensor | None
    original: torch.Tensor | None = None
    draws: int = 0
    similarity_to_original: float | None = None
    failed: str | None = None


def _similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(cosine_similarity(a.reshape(1, -1), b.reshape(1, -1).to(a.device)).reshape(-1)[0])


class IdentityPolicy(Protocol):
    """What a mode decides about identities (see the module docstring)."""

    similarity_key: str
    """Report key of the per-track output similarity."""

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        """The identity of a new track; ``original()`` embeds its first face (float [D])."""
        ...

    def identities_for(self, track_ids: list[int], originals: Callable[[], torch.Tensor]) -> list[TrackIdentity]:
        """The identities of new tracks, as :meth:`identity_for` gives them one after another
        in this order; ``originals()`` embeds their first faces in one batch (float [N,D])."""
        ...

    def redraw(self, track_id: int, identity: TrackIdentity) -> tuple[TrackIdentity, torch.Tensor | None]:
        """Another identity for a track whose output failed the privacy check (the ladder's
        redraw rung): the track's identity after the draws (a new object; ``identity`` is not
        changed) and the new code, or None when none was found."""
        ...

    def compare_with(self, identity: TrackIdentity) -> torch.Tensor:
        """What an output face of a track with ``identity`` is compared with (float [D])."""
        ...

    def check(self, similarity: float) -> str | None:
        """Why an output face with this similarity fails the check, or None when it passes."""
        ...

    def describe(self, identity: TrackIdentity) -> dict[str, Any] | None:
        """The identity's entry in the track's report, or None."""
        ...


class TargetIdentity:
    """Reenact: every track gets ``target``; outputs are compared with it and never redacted."""

    similarity_key = "similarity_to_target"

    def __init__(self, target: torch.Tensor) -> None:
        if target.ndim != 1:
            raise ShapeError(f"target identity must be float [D], got {tuple(target.shape)}")
        self.target = target

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        return TrackIdentity(code=self.target)

    def identities_for(self, track_ids: list[int], originals: Callable[[], torch.Tensor]) -> list[TrackIdentity]:
        return [TrackIdentity(code=self.target) for _t in track_ids]

    def redraw(self, track_id: int, identity: TrackIdentity) -> tuple[TrackIdentity, torch.Tensor | None]:
        return identity, None

    def compare_with(self, identity: TrackIdentity) -> torch.Tensor:
        return self.target

    def check(self, similarity: float) -> str | None:
        return None

    def describe(self, identity: TrackIdentity) -> dict[str, Any] | None:
        return None


class SyntheticIdentities:
    """Deidentify: one synthetic identity per track, drawn and checked (module docstring).

    Track ``k`` with seed ``s`` asks ``candidate`` for its ``i``-th candidate with the seed
    ``(s * 1000003 + k * 10007 + i) mod 2**63``: the same seed gives the same identities,
    another seed other ones. A candidate is kept when its similarity to the track's original
    face is below ``threshold``; after ``max_draws`` the track has no identity (``failed``).

    The tracks that start together (:meth:`identities_for`) are drawn in rounds: every track's
    next candidate in one call of ``candidates`` (seeds -> one code float [D] per seed, a list
    or a [N,D] tensor; by default ``candidate`` per seed; a lone track, and a redraw, is a round
    of one), then the tracks whose candidate was too close draw again. A
    track's seeds depend on the track alone, so it gets the identity it would get alone.
    """

    similarity_key = "similarity_to_original"

    def __init__(self, candidate: Callable[[int], torch.Tensor], threshold: float, seed: int, max_draws: int,
                 candidates: Callable[[list[int]], Iterable[torch.Tensor]] | None = None) -> None:
        if max_draws < 1:
            raise ConfigError(f"deidentify.max_draws must be >= 1, got {max_draws}")
        self.candidate, self.threshold, self.seed, self.max_draws = candidate, threshold, seed, max_draws
        self.candidates = candidates or (lambda seeds: [candidate(s) for s in seeds])
        #: the identity each track has now (a person seen again keeps theirs: :meth:`same_person`)
        self.identities: dict[int, TrackIdentity] = {}

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        if track_id not in self.identities:
            face = original()
            self.identities[track_id] = self.same_person(face) or self.draw(track_id, face)
        return self.identities[track_id]

    def identities_for(self, track_ids: list[int], originals: Callable[[], torch.Tensor]) -> list[TrackIdentity]:
        """The identities of new tracks (in this order, as :meth:`identity_for` one after
        another gives them): a person seen before keeps theirs (an earlier track, one of these
        included); the others' candidates are drawn together (:meth:`_draw_rounds`)."""
        new = [t for t in dict.fromkeys(track_ids) if t not in self.identities]
        if new:
            faces = originals()
            assert faces.shape[0] == len(track_ids), (tuple(faces.shape), len(track_ids))
            face_of = {t: faces[track_ids.index(t)] for t in new}
            # 1. draw for every track that no identity known before these tracks fits
            drawn = self._draw_rounds({t: face_of[t] for t in new if self.same_person(face_of[t]) is None})
            fresh = {t: self._identity(face_of[t], d) for t, d in drawn.items()}
            # 2. in order: a person seen before (or earlier among these) keeps theirs, else the draw
            for t in new:
                kept = self.same_person(face_of[t])
                self.identities[t] = kept or fresh.get(t) or self.draw(t, face_of[t])
        return [self.identities[t] for t in track_ids]

    def _draw_rounds(self, originals: dict[int, torch.Tensor], start: dict[int, int] | None = None
                     ) -> dict[int, tuple[int, torch.Tensor | None, float | None]]:
        """Per track, its candidates ``start`` (default 0), ``start + 1``, ... until one is below
        ``threshold`` to its original, at most ``max_draws``: (draws so far, code, similarity),
        code None when none was. Every track's next candidate of a round comes from one call of
        ``candidates``; a track's seeds depend on the track alone."""
        first = start or {}
        attempt = {t: first.get(t, 0) for t in originals}
        end = {t: a + self.max_draws for t, a in attempt.items()}  # one past each track's last draw
        out: dict[int, tuple[int, torch.Tensor | None, float | None]] = {}
        while attempt:
            tracks = list(attempt)
            codes = self.candidates([self._seed(t, attempt[t]) for t in tracks])
            for t, code in zip(tracks, codes, strict=True):
                sim = _similarity(code, originals[t])
                if sim < self.threshold:
                    out[t] = (attempt.pop(t) + 1, code, sim)
                elif attempt[t] + 1 >= end[t]:
                    out[t] = (attempt.pop(t) + 1, None, None)
                else:
                    attempt[t] += 1
        return out

    def _identity(self, original: torch.Tensor, drawn: tuple[int, torch.Tensor | None, float | None]
                  ) -> TrackIdentity:
        """A new track's identity from its draws (:meth:`_draw_rounds`)."""
        draws, code, sim = drawn
        if code is None:
            return self._failed(original)
        return TrackIdentity(code=code, original=original, draws=draws, similarity_to_original=sim)

    def _seed(self, track_id: int, attempt: int) -> int:
        return (self.seed * 1_000_003 + track_id * 10_007 + attempt) % 2**63

    def _failed(self, original: torch.Tensor) -> TrackIdentity:
        return TrackIdentity(code=None, original=original, draws=self.max_draws,
                             failed=f"no identity below similarity {self.threshold} in {self.max_draws} draws")

    def same_person(self, original: torch.Tensor) -> TrackIdentity | None:
        """A person seen before (an earlier track, e.g. before a scene cut) keeps the synthetic
        identity they had, as long as it still passes the check against this face."""
        best, best_sim = None, self.threshold
        for earlier in self.identities.values():
            if earlier.code is None or earlier.original is None:
                continue
            sim = _similarity(original, earlier.original)
            if sim >= best_sim:
                best, best_sim = earlier, sim
        if best is None or best.code is None:
            return None
        to_original = _similarity(best.code, original)
        if to_original >= self.threshold:
            return None
        return TrackIdentity(code=best.code, original=original, draws=0, similarity_to_original=to_original)

    def draw(self, track_id: int, original: torch.Tensor) -> TrackIdentity:
        """Draw candidates for ``track_id`` until one is far enough from ``original``."""
        return self._identity(original, self._draw_rounds({track_id: original})[track_id])

    def redraw(self, track_id: int, identity: TrackIdentity) -> tuple[TrackIdentity, torch.Tensor | None]:
        """The next candidates in the track's seeded sequence, kept when below ``threshold`` to
        the original; no code after ``max_draws`` more without one (the track keeps its code,
        with the draws counted). The result is also the identity a person seen again gets."""
        if identity.original is None:
            return identity, None
        draws, code, sim = self._draw_rounds({track_id: identity.original}, {track_id: identity.draws})[track_id]
        new = replace(identity, draws=draws) if code is None else replace(
            identity, draws=draws, code=code, similarity_to_original=sim)
        self.identities[track_id] = new
        return new, code

    def compare_with(self, identity: TrackIdentity) -> torch.Tensor:
        assert identity.original is not None
        return identity.original

    def check(self, similarity: float) -> str | None:
        if similarity >= self.threshold:
            return f"output face still similar to the original ({similarity:.3f} >= {self.threshold})"
        return None

    def describe(self, identity: TrackIdentity) -> dict[str, Any] | None:
        code = identity.code
        return {
            "draws": identity.draws,
            "code": [round(float(v), 5) for v in code.tolist()] if code is not None else None,
            "similarity_to_original": identity.similarity_to_original,
            "failed": identity.failed,
        }


class ClassicRedaction:
    """Deidentify with ``--method blur|pixelate|solid``: no identity is drawn; every tracked
    face (and every untracked detection) starts on the privacy ladder's first redaction rung
    (the face-shaped blur or pixelation, or ``face_solid``)."""

    similarity_key = "similarity_to_original"

    def __init__(self, method: str) -> None:
        if method not in ("blur", "pixelate", "solid"):
            raise ConfigError(f"a classic redaction is blur, pixelate or solid, got {method!r}")
        self.method = method

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        return TrackIdentity(code=None, failed=f"redacted by --method {self.method}")

    def identities_for(self, track_ids: list[int], originals: Callable[[], torch.Tensor]) -> list[TrackIdentity]:
        return [self.identity_for(t, originals) for t in track_ids]

    def redraw(self, track_id: int, identity: TrackIdentity) -> tuple[TrackIdentity, torch.Tensor | None]:
        return identity, None

    def compare_with(self, identity: TrackIdentity) -> torch.Tensor:
        raise ConfigError("a classic redaction has nothing to compare an identity with")

    def check(self, similarity: float) -> str | None:
        return None

    def describe(self, identity: TrackIdentity) -> dict[str, Any] | None:
        return None


class GeneratorCandidates:
    """Candidate identities from the pack's generator: ``seed`` -> identity code float ``[D]``
    of the face that ``z ~ N(0, I)`` (seeded) renders at StyleGAN truncation ``truncation``."""

    def __init__(self, pack: LoadedPack, truncation: float, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.pack, self.truncation, self.max_batch = pack, truncation, max_batch
        self.template = ffhq_template(pack.generator.img_resolution)[None].to(pack.device)

    def __call__(self, seed: int) -> torch.Tensor:
        return self.many([seed])[0]

    @torch.no_grad()
    def many(self, seeds: list[int]) -> torch.Tensor:
        """The candidates of ``seeds`` (each seed's own ``z``, so a candidate does not depend
        on the others): one generator batch and one identity-model call per ``max_batch``
        seeds. Conventions: returns float [N,D]."""
        G, device = self.pack.generator, self.pack.device
        codes = []
        for k in range(0, len(seeds), self.max_batch):
            part = seeds[k : k + self.max_batch]
            z = torch.cat([torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s)) for s in part])
            img = G.synthesis(G.mapping(z.to(device), None, truncation_psi=self.truncation), noise_mode="const")
            frames = ((img.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            codes.append(self.pack.identity.embed(frames, torch.arange(len(part), device=device),
                                                  self.template.repeat(len(part), 1, 1)))
        out: torch.Tensor = torch.cat(codes)
        return out


def make_policy(plan: RunPlan, pack: LoadedPack, target: torch.Tensor | None = None) -> IdentityPolicy:
    """The identity policy of ``plan`` (bound to ``pack``: :meth:`RunPlan.bind`); ``target``:
    the identity photo's code float [D] (a ``target`` policy only)."""
    if plan.policy == "target":
        if target is None:
            raise ConfigError("reenact needs a target identity (the identity photo's code)")
        return TargetIdentity(target.to(pack.device))
    if plan.policy == "classic":
        return ClassicRedaction(plan.method)
    s = plan.config.deidentify
    source = GeneratorCandidates(pack, s.truncation, plan.config.max_batch)
    return SyntheticIdentities(source, plan.threshold, plan.config.seed, s.max_draws, candidates=source.many)
