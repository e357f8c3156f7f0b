"""The privacy check priced per chip batch (issue 28, item 2): every chip a round of the ladder
needs (the originals not cached yet, their same-context baselines, the output faces; every
checker's chip) goes through one forward per recogniser, in slices of ``CHECK_BATCH`` chips;
the faces of a chunk that fail and climb are checked again together; no original is embedded
twice.

The counting recogniser is dlib's class with its network replaced by a count of the chips per
forward (the guard batches the recognisers that cut their own chips with their template:
``checkers.template_chips``); its descriptor is the chip's mean colour per quadrant, or one
constant vector (every face the same person: every check fails).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reenact.pipeline.privacy.guard as guard_module
from reenact.faces.identity import DlibFaceEncoder
from reenact.pipeline.privacy import Checker, PrivacyGuard, ladder_for, offline_dlib
from reenact.pipeline.privacy.checkers import CHECK_BATCH, ChipJob, embed_jobs
from reenact.pipeline.report import RunReport
from reenact.pipeline.slots import FaceRecord

pytestmark = pytest.mark.privacy

H = W = 96
#: two faces per frame, far apart: (box, five points) per track
FACES = {
    0: (np.array([8.0, 8.0, 40.0, 40.0], np.float32),
        np.array([[17, 19], [31, 19], [24, 26], [18, 33], [30, 33]], np.float32)),
    1: (np.array([54.0, 50.0, 86.0, 82.0], np.float32),
        np.array([[63, 61], [77, 61], [70, 68], [64, 75], [76, 75]], np.float32)),
}


class CountingDlib(DlibFaceEncoder):
    """dlib's encoder class with a stand-in network that records the chips of each forward."""

    def __init__(self, constant: bool = False) -> None:  # no weights: the network is the stand-in below
        self.impl, self.batch_size = "torch", 8
        self.constant = constant
        self.forwards: list[int] = []

    def descriptors(self, crops: torch.Tensor) -> torch.Tensor:
        self.forwards.append(int(crops.shape[0]))
        if self.constant:
            return torch.ones((crops.shape[0], self.dim))
        quads = torch.nn.functional.adaptive_avg_pool2d(crops.float(), 4).flatten(1)  # [F,48]
        return torch.cat([quads, quads.flip(1), quads[:, :32] + 2.0], dim=1)


def video(frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (frames, H, W, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def records(rows: int) -> list[tuple[int, FaceRecord]]:
    return [(j, FaceRecord(t, box.copy(), pts.copy(), failed="redacted by --method blur"))
            for j in range(rows) for t, (box, pts) in FACES.items()]


def guard(checkers: list[Checker]) -> tuple[PrivacyGuard, RunReport]:
    report = RunReport("similarity_to_original")
    g = PrivacyGuard(checkers, ladder_for("blur"), report)
    report.privacy = g.describe()
    return g, report


def test_embed_jobs_gives_each_checker_what_its_own_embed_gives() -> None:
    """Jobs from images of different sizes, tight and loose chips of dlib's real network, in
    one call: each row is the embedding that checker's own embed gives that face."""
    dlib = offline_dlib()
    checkers = [Checker(dlib, "tight", 0.9, "test"), Checker(dlib, "loose", 0.9, "test")]
    frames, windows = video(2), video(3, seed=1)[:, :64, :80]
    jobs = [ChipJob(frames, torch.tensor([0, 1, 1]), torch.from_numpy(np.stack([FACES[0][1], FACES[0][1],
                                                                               FACES[1][1]]))),
            ChipJob(windows, torch.tensor([2]), torch.from_numpy(FACES[0][1][None]))]
    got = embed_jobs(checkers, jobs)
    for job, codes in zip(jobs, got, strict=True):
        for c in checkers:
            assert codes[c.name].shape == (len(job), 128)
            assert torch.allclose(codes[c.name], c.embed(job.images, job.index, job.points), atol=1e-5)


def test_a_round_is_one_forward_per_recogniser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three frames with two faces each, every face measured: the originals of the two tracks,
    their baselines and the six outputs, tight and loose, are 20 chips in full slices of 16 for
    one recogniser; the other recogniser's 10 tight chips are its own one forward (before: one
    call per checker and kind of chip, 9 calls)."""
    monkeypatch.setattr(guard_module, "RECHECK_FRAMES", 1)  # no check carried: every face measured
    a, b = CountingDlib(), CountingDlib()
    b.name = "other"
    g, report = guard([Checker(a, "tight", 2.0, "test"), Checker(a, "loose", 2.0, "test"),
                       Checker(b, "tight", 2.0, "test")])
    frames = video()
    g.apply(frames, frames.clone(), records(3), [0, 1, 2])
    assert report.tracks[0].rungs == {"blur": 3} and report.tracks[1].rungs == {"blur": 3}
    assert a.forwards == [CHECK_BATCH, 20 - CHECK_BATCH]
    assert b.forwards == [10]


def test_faces_that_climb_are_checked_again_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every blur fails (one constant descriptor): the six faces climb from blur to fill
    together and are checked in one forward (12 chips); the fill is their context alone,
    which that descriptor links as much as the face, so it passes by construction."""
    monkeypatch.setattr(guard_module, "RECHECK_FRAMES", 1)
    enc = CountingDlib(constant=True)
    g, report = guard([Checker(enc, "tight", 0.5, "test"), Checker(enc, "loose", 0.5, "test")])
    frames = video()
    out = g.apply(frames, frames.clone(), records(3), [0, 1, 2])
    assert report.tracks[0].rungs == {"fill": 3} and report.tracks[1].rungs == {"fill": 3}
    assert enc.forwards == [CHECK_BATCH, 20 - CHECK_BATCH, 12]
    left, top, right, bottom = (int(v) for v in FACES[0][0])
    inner = out[:, top + 4 : bottom - 4, left + 4 : right - 4].int()
    assert int((inner - inner[:, :1, :1]).abs().max()) == 0  # one flat colour per face


def test_a_job_without_faces_gets_empty_codes_and_no_forward() -> None:
    """A round where one job has no faces (a chunk whose faces are all carried): that job gets
    [0, D] codes for every checker, the other job its rows, and no forward runs for nothing."""
    enc = CountingDlib()
    checkers = [Checker(enc, "tight", 2.0, "test"), Checker(enc, "loose", 2.0, "test")]
    frames = video(2)
    points = torch.from_numpy(np.stack([FACES[0][1]] * 2))
    empty = ChipJob(frames, torch.zeros(0, dtype=torch.long), torch.zeros((0, 5, 2)))
    got = embed_jobs(checkers, [empty, ChipJob(frames, torch.arange(2), points)])
    assert enc.forwards == [4]
    for name in ("dlib-resnet/tight", "dlib-resnet/loose"):
        assert got[0][name].shape == (0, 128) and got[1][name].shape == (2, 128)
    assert embed_jobs(checkers, [empty])[0]["dlib-resnet/tight"].shape == (0, 128) and enc.forwards == [4]


def test_a_slice_holds_at_most_check_batch_chips() -> None:
    """Many faces: the chips go through in slices of CHECK_BATCH, only the last one short."""
    enc = CountingDlib()
    checkers = [Checker(enc, "tight", 2.0, "test"), Checker(enc, "loose", 2.0, "test")]
    frames = video(20)
    points = torch.from_numpy(np.stack([FACES[0][1]] * 20))
    got = embed_jobs(checkers, [ChipJob(frames, torch.arange(20), points)])[0]
    assert enc.forwards == [CHECK_BATCH] * (40 // CHECK_BATCH) + [40 % CHECK_BATCH]
    assert got["dlib-resnet/tight"].shape == (20, 128)


@pytest.mark.parametrize("most", [2, 0])
def test_a_round_whose_forward_fails_is_embedded_in_parts_failing_closed(most: int,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The network raises on forwards of more than ``most`` chips. With 2: the round's one
    forward fails, its parts (originals, baselines, outputs: 2 chips each) are embedded apart
    and both faces are measured and blurred. With 0: every forward fails, and each face ends
    on solid with the reason, never unredacted."""
    enc = CountingDlib()
    real = CountingDlib.descriptors

    def descriptors(self: CountingDlib, crops: torch.Tensor) -> torch.Tensor:
        if crops.shape[0] > most:
            raise RuntimeError("recogniser crashed")
        return real(self, crops)

    monkeypatch.setattr(CountingDlib, "descriptors", descriptors)
    g, report = guard([Checker(enc, "tight", 2.0, "test")])
    frames = video(1)
    out = g.apply(frames, frames.clone(), records(1), [0])
    if most:
        assert report.tracks[0].rungs == {"blur": 1} and report.tracks[1].rungs == {"blur": 1}
        assert enc.forwards == [2, 2, 2]  # the originals, the baselines, the outputs
        return
    for track, (box, _pts) in FACES.items():
        assert report.tracks[track].rungs == {"solid": 1}
        assert report.tracks[track].privacy_frames[0][3] == "the original face could not be embedded"
        left, top, right, bottom = (int(v) for v in box)
        assert int(out[0, top + 4 : bottom - 4, left + 4 : right - 4].max()) == 0
