"""Identity policies: which identity code each track gets, and what its output is checked against.

One policy per mode, picked in one place (:func:`policy_class`):

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from reenact.errors import ConfigError, InputError, ShapeError
from reenact.faces import cosine_similarity, ffhq_template, identity_from_photo
from reenact.faces.track import TrackerSettings
from reenact.packs import LoadedPack
from reenact.pipeline.settings import Mode, PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class TrackIdentity:
    """The identity code given to one track, and what was checked about it."""

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
    redacts: bool
    """Faces that fail (no identity, failed check, refused by the blender) are blurred."""
    covers_untracked: bool
    """Detections that no released track covers are treated as failed faces."""
    private: bool
    """The output must not identify the people in it: metadata is stripped, the audio named
    in a warning, and the preview (original faces) is written only with ``--audit``."""

    def check_tracker(self, settings: TrackerSettings) -> None:
        """Raise ConfigError when the tracker settings cannot give this policy its guarantees."""
        ...

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        """The identity of a new track; ``original()`` embeds its first face (float [D])."""
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
    redacts = False
    covers_untracked = False
    private = False

    def __init__(self, target: torch.Tensor) -> None:
        if target.ndim != 1:
            raise ShapeError(f"target identity must be float [D], got {tuple(target.shape)}")
        self.target = target

    @staticmethod
    def check_request(identity_photo: str | Path | None) -> None:
        if identity_photo is None:
            raise InputError("reenact needs --identity PHOTO: the face to put on the video")

    @classmethod
    def for_run(
        cls, pack: LoadedPack, config: PipelineConfig, threshold: float, identity_photo: str | Path | None,
        warnings: list[str],
    ) -> TargetIdentity:
        """Embed the identity photo (warning about a weak detection)."""
        cls.check_request(identity_photo)
        assert identity_photo is not None
        photo = identity_from_photo(identity_photo, pack.detector, pack.identity)
        score = float(photo.detections.scores[photo.index_used])
        if score < config.optimize.min_target_score:
            warnings.append(f"identity photo {identity_photo}: face detected with score {score:.3f} < "
                            f"{config.optimize.min_target_score}; use a sharper, frontal photo")
            log.warning(warnings[-1])
        return cls.build(pack, config, threshold, photo.embedding)

    @classmethod
    def build(
        cls, pack: LoadedPack, config: PipelineConfig, threshold: float, target: torch.Tensor | None
    ) -> TargetIdentity:
        """The policy for a target identity code float [D]."""
        if target is None:
            raise ConfigError("reenact needs a target identity")
        return cls(target.to(pack.device))

    def check_tracker(self, settings: TrackerSettings) -> None:
        return None

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        return TrackIdentity(code=self.target)

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
    ``fail_closed``: failed faces are blurred.
    """

    similarity_key = "similarity_to_original"
    covers_untracked = True
    private = True

    def __init__(
        self, candidate: Callable[[int], torch.Tensor], threshold: float, seed: int, max_draws: int,
        fail_closed: bool = True,
    ) -> None:
        if max_draws < 1:
            raise ConfigError(f"deidentify.max_draws must be >= 1, got {max_draws}")
        self.candidate, self.threshold, self.seed, self.max_draws = candidate, threshold, seed, max_draws
        self.redacts = fail_closed
        self.identities: dict[int, TrackIdentity] = {}

    @staticmethod
    def check_request(identity_photo: str | Path | None) -> None:
        return None

    @classmethod
    def for_run(
        cls, pack: LoadedPack, config: PipelineConfig, threshold: float, identity_photo: str | Path | None,
        warnings: list[str],
    ) -> SyntheticIdentities:
        """Candidates drawn from the pack's generator, seeded by ``config.seed``."""
        return cls.build(pack, config, threshold, None)

    @classmethod
    def build(
        cls, pack: LoadedPack, config: PipelineConfig, threshold: float, target: torch.Tensor | None
    ) -> SyntheticIdentities:
        """The policy for a run (``target`` is not used: every track gets its own identity)."""
        s = config.deidentify
        return cls(GeneratorCandidates(pack, s.truncation), threshold, config.seed, s.max_draws, s.fail_closed)

    def check_tracker(self, settings: TrackerSettings) -> None:
        if self.redacts and settings.detect_every != 1:
            raise ConfigError(
                f"deidentify is fail-closed and must check every frame for faces, but tracker.detect_every is "
                f"{settings.detect_every}; use detect_every 1 (or deidentify.fail_closed false)"
            )

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        if track_id not in self.identities:
            face = original()
            self.identities[track_id] = self.same_person(face) or self.draw(track_id, face)
        return self.identities[track_id]

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
        best = TrackIdentity(code=None, original=original)
        for attempt in range(self.max_draws):
            code = self.candidate((self.seed * 1_000_003 + track_id * 10_007 + attempt) % 2**63)
            sim = _similarity(code, original)
            best.draws = attempt + 1
            if sim < self.threshold:
                best.code, best.similarity_to_original = code, sim
                return best
        best.failed = f"no identity below similarity {self.threshold} in {self.max_draws} draws"
        return best

    def redraw(self, track_id: int) -> torch.Tensor | None:
        """Another identity for ``track_id`` after its output failed the privacy check (the
        ladder's rung a): the next candidates in the track's seeded sequence, kept when below
        ``threshold`` to the original; None after ``max_draws`` more without one."""
        identity = self.identities.get(track_id)
        if identity is None or identity.original is None:
            return None
        start = identity.draws
        for attempt in range(start, start + self.max_draws):
            code = self.candidate((self.seed * 1_000_003 + track_id * 10_007 + attempt) % 2**63)
            identity.draws = attempt + 1
            sim = _similarity(code, identity.original)
            if sim < self.threshold:
                identity.code, identity.similarity_to_original = code, sim
                return code
        return None

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
    face (and every untracked detection) goes to the privacy ladder's box rung."""

    similarity_key = "similarity_to_original"
    redacts = True
    covers_untracked = True
    private = True

    def __init__(self, method: str) -> None:
        if method not in ("blur", "pixelate", "solid"):
            raise ConfigError(f"a classic redaction is blur, pixelate or solid, got {method!r}")
        self.method = method

    def check_tracker(self, settings: TrackerSettings) -> None:
        if settings.detect_every != 1:
            raise ConfigError(
                f"deidentify must check every frame for faces, but tracker.detect_every is "
                f"{settings.detect_every}; use detect_every 1"
            )

    def identity_for(self, track_id: int, original: Callable[[], torch.Tensor]) -> TrackIdentity:
        return TrackIdentity(code=None, failed=f"redacted by --method {self.method}")

    def compare_with(self, identity: TrackIdentity) -> torch.Tensor:
        raise ConfigError("a classic redaction has nothing to compare an identity with")

    def check(self, similarity: float) -> str | None:
        return None

    def describe(self, identity: TrackIdentity) -> dict[str, Any] | None:
        return None


class GeneratorCandidates:
    """Candidate identities from the pack's generator: ``seed`` -> identity code float ``[D]``
    of the face that ``z ~ N(0, I)`` (seeded) renders at StyleGAN truncation ``truncation``."""

    def __init__(self, pack: LoadedPack, truncation: float) -> None:
        self.pack, self.truncation = pack, truncation
        self.template = ffhq_template(pack.generator.img_resolution)[None].to(pack.device)

    @torch.no_grad()
    def __call__(self, seed: int) -> torch.Tensor:
        G, device = self.pack.generator, self.pack.device
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        img = G.synthesis(G.mapping(z, None, truncation_psi=self.truncation), noise_mode="const")
        frame = ((img[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        code: torch.Tensor = self.pack.identity.embed(
            frame[None], torch.zeros(1, dtype=torch.long, device=device), self.template
        )[0]
        return code


POLICIES: dict[str, type[TargetIdentity] | type[SyntheticIdentities]] = {
    "reenact": TargetIdentity,
    "deidentify": SyntheticIdentities,
}


def classic_method(mode: Mode, method: str) -> bool:
    """Whether a run redacts with blur/pixelate/solid (``ClassicRedaction``, no generator or
    mapper needed) instead of the mode's identity policy."""
    return mode == "deidentify" and method != "synthetic"


def policy_class(mode: Mode) -> type[TargetIdentity] | type[SyntheticIdentities]:
    """The identity policy of ``mode`` (with :func:`classic_method`, the one place where the
    mode decides anything)."""
    if mode not in POLICIES:
        raise ConfigError(f"mode must be one of {sorted(POLICIES)}, got {mode!r}")
    return POLICIES[mode]
