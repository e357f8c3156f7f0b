"""The synthetic identities of a crowd drawn and checked in batches (issue 28, item 4): the
tracks whose faces are first synthesized in the same frames have their first faces embedded
in one call and their candidates drawn in rounds, every track's next candidate of a round in
one generator batch (at most ``max_batch``); a track gets the identity it gets alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reenact.config import replace
from reenact.faces.detect import largest_face, make_detector
from reenact.io import FrameChunk
from reenact.io.images import read_image
from reenact.pipeline import FaceReplacer, PipelineConfig, cached_pack, plan_run
from reenact.pipeline.identity import GeneratorCandidates, SyntheticIdentities

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant

D = 4


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.float(), dim=0)


def candidate(seed: int) -> torch.Tensor:
    """A seeded random identity code [D] (the same seed, the same code)."""
    return _unit(torch.randn(D, generator=torch.Generator().manual_seed(seed % 2**31)))


class Counted:
    """The batched candidate source, counting its calls and their seeds."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, seeds: list[int]) -> torch.Tensor:
        self.calls.append(list(seeds))
        return torch.stack([candidate(s) for s in seeds])


def test_tracks_drawn_together_get_what_they_get_one_after_another() -> None:
    """Five tracks starting together, some needing several draws (a strict threshold), one the
    same person as an earlier one of them: each track's identity (code, draws, failure) is the
    one that drawing them one after another gives, and each round is one batched call."""
    gen = torch.Generator().manual_seed(7)
    people = [_unit(torch.randn(D, generator=gen)) for _ in range(4)]
    faces = {3: people[0], 5: people[1], 8: _unit(people[0] + 0.01 * torch.randn(D, generator=gen)),
             11: people[2], 20: people[3]}
    one_by_one = SyntheticIdentities(candidate, threshold=-0.2, seed=3, max_draws=6)
    expected = {t: one_by_one.identity_for(t, lambda f=f: f) for t, f in faces.items()}
    source = Counted()
    together = SyntheticIdentities(candidate, threshold=-0.2, seed=3, max_draws=6, candidates=source)
    got = dict(zip(faces, together.identities_for(list(faces), lambda: torch.stack(list(faces.values()))),
                   strict=True))
    for t in faces:
        a, b = expected[t], got[t]
        assert (a.draws, a.failed, a.similarity_to_original) == (b.draws, b.failed, b.similarity_to_original), t
        assert (a.code is None and b.code is None) or torch.equal(a.code, b.code), t
    assert got[8].code is got[3].code, "the same person keeps the identity of the earlier track"
    assert got[5].failed is not None and got[3].draws == 3, "one track needs three draws, one finds none"
    # one call per round, every track's candidate in the first (a track that turns out to be an
    # earlier one of them is drawn too, then keeps that identity); one by one: a call per candidate
    assert len(source.calls[0]) == len(faces) and len(source.calls) == 6  # track 5 draws all 6
    assert len(source.calls) < sum(i.draws for i in expected.values())


@pytest.fixture(scope="module")
def tiny_synthetic():  # noqa: ANN201
    config = replace(PipelineConfig(device="cpu"), {"deidentify.method": "synthetic",
                                                    "deidentify.synthetic_min_face": 0.0,
                                                    "deidentify.redraws": 0})  # no ladder redraws: draws only
    plan = plan_run("deidentify", config)
    pack = cached_pack(plan)
    return plan.bind(pack), pack


def test_a_candidate_drawn_in_a_batch_is_the_one_drawn_alone(tiny_synthetic) -> None:  # noqa: ANN001
    """The tiny pack's generator and dlib: each seed's candidate is the same in a batch of
    three, two batches (max_batch 2) or alone."""
    _plan, pack = tiny_synthetic
    seeds = [11, 2**40 + 3, 977]
    alone = torch.stack([GeneratorCandidates(pack, 0.7, max_batch=1)(s) for s in seeds])
    for max_batch in (2, 3):
        batched = GeneratorCandidates(pack, 0.7, max_batch=max_batch).many(seeds)
        assert torch.allclose(batched, alone, atol=1e-4)
    with pytest.raises(Exception, match="max_batch must be >= 1"):
        GeneratorCandidates(pack, 0.7, max_batch=0)


def test_tracks_starting_in_one_chunk_draw_their_candidates_in_one_generator_batch(
        tiny_synthetic, fixtures: Path) -> None:  # noqa: ANN001
    """Two people in the first chunk of a clip, both synthesized: the generator's mapping runs
    once per round of draws with both tracks' seeds (before: once per candidate), and each
    track's identity is the one its own draw gives it alone."""
    plan, pack = tiny_synthetic
    people = []
    for name in ("img1.jpg", "img17.jpg"):  # two people
        image = torch.as_tensor(np.asarray(read_image(fixtures / "images/deepface" / name)))
        dets = make_detector("offline").detect(image[None])[0]
        x1, y1, x2, y2 = (int(v) for v in dets.boxes[largest_face(dets)])
        crop = image[max(0, y1 - 20) : y2 + 20, max(0, x1 - 20) : x2 + 20].permute(2, 0, 1)[None].float()
        people.append(F.interpolate(crop, size=(112, 112), mode="bilinear", antialias=True)[0]
                      .permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8))
    frame = torch.full((256, 256, 3), 120, dtype=torch.uint8)
    frame[60:172, 8:120], frame[60:172, 136:248] = people
    frames = torch.stack([frame] * 4)
    calls: list[int] = []
    hook = pack.generator.mapping.register_forward_pre_hook(lambda _m, args: calls.append(int(args[0].shape[0])))
    try:
        replacer = FaceReplacer(plan, pack, 25.0)
        list(replacer(iter([FrameChunk(frames, torch.arange(4), 0)])))
    finally:
        hook.remove()
    identities = replacer.identities
    assert len(identities) == 2, "two tracks, both synthesized"
    draws = [i.draws for i in identities.values()]
    assert calls[0] == 2 and len(calls) == max(draws), (calls, draws)  # one batch per round, both tracks in the first
    policy = replacer.policy
    assert isinstance(policy, SyntheticIdentities)
    for track, identity in identities.items():
        alone = SyntheticIdentities(policy.candidate, policy.threshold, policy.seed, policy.max_draws)
        assert identity.original is not None and identity.code is not None
        again = alone.draw(track, identity.original)
        assert again.draws == identity.draws and again.code is not None
        assert torch.allclose(again.code, identity.code, atol=1e-4)
