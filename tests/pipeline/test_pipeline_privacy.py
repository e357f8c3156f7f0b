"""Deidentify's fail-closed paths, one test per path, on plain tensors (no model pack).

These are the tests ``bench/mutation.py`` runs against every mutant of the privacy code
(marker ``privacy``): each path must be caught when it is switched off or bent.

* the check after rendering: an output face still similar to its original fails and is blurred;
* detections that no released track covers are blurred;
* a face the blender refused (or with no identity) is blurred, never left as it was;
* the synthetic identity draw keeps only candidates below the threshold, and a person seen
  again keeps their identity only while it passes;
* the calibrated privacy thresholds and their override.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reenact.config import replace
from reenact.errors import ConfigError, ShapeError
from reenact.faces import FaceDetections
from reenact.faces.privacy_thresholds import PRIVACY_THRESHOLDS, privacy_threshold
from reenact.pipeline import (
    FaceRecord,
    FrameSlot,
    PipelineConfig,
    RunReport,
    SyntheticIdentities,
    TargetIdentity,
    TrackIdentity,
    check_identities,
    make_policy,
    plan_run,
    untracked_faces,
)
from reenact.pipeline.privacy import count_faces
from reenact.pipeline.stream import too_small

pytestmark = pytest.mark.privacy

SAMPLE_PHOTO = Path(__file__).resolve().parents[2] / "samples" / "astronaut_identity.jpg"

H = W = 96
BOX = np.array([20.0, 24.0, 60.0, 70.0], np.float32)


def _textured(seed: int = 0) -> torch.Tensor:
    """uint8 [H,W,3] with fine detail everywhere (what a blur must destroy)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (H, W, 3), generator=g, dtype=torch.uint8)


def _unit(*values: float) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float32)
    return v / v.norm()


def _policy(threshold: float = 0.5, codes: list[torch.Tensor] | None = None,
            max_draws: int = 3) -> SyntheticIdentities:
    pool = codes or [_unit(0.0, 1.0, 0.0)]
    return SyntheticIdentities(lambda seed: pool[seed % len(pool)], threshold, seed=0, max_draws=max_draws)


def _record(track_id: int = 0, failed: str | None = None) -> FaceRecord:
    points = np.array([[30, 40], [50, 40], [40, 50], [32, 60], [48, 60]], np.float32)
    return FaceRecord(track_id, BOX.copy(), points, failed=failed)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.int() - b.int()).abs().sum(-1) > 0


def _inside(mask: torch.Tensor, box: np.ndarray = BOX) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(mask[y1:y2, x1:x2].float().mean())


# --- the check after rendering -----------------------------------------------------------

def _check(policy: SyntheticIdentities, output_code: torch.Tensor, original: torch.Tensor,
           ) -> tuple[FaceRecord, RunReport]:
    frames = _textured()[None]
    record = _record()
    identities = {0: TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=original)}
    report = RunReport(policy.similarity_key)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def embed(out: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        seen.append((index, points))
        return output_code[None].expand(index.shape[0], -1)

    check_identities(frames, [(0, record)], [7], embed, policy, identities, report)
    assert seen and seen[0][0].tolist() == [0] and seen[0][1].shape == (1, 5, 2)
    return record, report


def test_output_still_like_the_original_fails_the_check() -> None:
    original = _unit(1.0, 0.0, 0.0)
    record, report = _check(_policy(threshold=0.5), _unit(1.0, 0.1, 0.0), original)
    assert record.failed is not None and "still similar" in record.failed
    assert report.tracks[0].frame_indices == [7]
    assert report.tracks[0].similarities[0] == pytest.approx(0.995, abs=1e-3)


def test_output_far_from_the_original_passes_the_check() -> None:
    record, report = _check(_policy(threshold=0.5), _unit(0.0, 1.0, 0.0), _unit(1.0, 0.0, 0.0))
    assert record.failed is None
    assert report.tracks[0].similarities[0] == pytest.approx(0.0, abs=1e-6)


def test_the_check_fails_at_the_threshold_itself() -> None:
    policy = _policy(threshold=0.6)
    assert policy.check(0.6) is not None and policy.check(0.5999) is None and policy.check(0.9) is not None
    assert "0.600" in str(policy.check(0.6))


def test_an_embedder_that_loses_faces_is_an_error_not_an_unchecked_face() -> None:
    policy = _policy(threshold=0.5)
    identities = {0: TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=_unit(1.0, 0.0, 0.0))}
    record = _record()
    with pytest.raises(ValueError):
        check_identities(_textured()[None], [(0, record)], [0], lambda *a: torch.zeros(0, 3), policy, identities,
                         RunReport(policy.similarity_key))


def test_check_identities_rejects_frames_that_do_not_match_their_indices() -> None:
    with pytest.raises(ShapeError):
        check_identities(_textured()[None], [], [0, 1], lambda *a: torch.zeros(0, 3), _policy(), {},
                         RunReport("s"))


def test_reenact_never_fails_or_redacts() -> None:
    target = _unit(1.0, 0.0)
    policy = TargetIdentity(target)
    assert policy.check(1.0) is None and policy.check(-1.0) is None
    assert policy.compare_with(policy.identity_for(3, lambda: _unit(0.0, 1.0))) is target


def test_deidentify_compares_with_the_original_and_is_fail_closed() -> None:
    policy = _policy()
    original = _unit(1.0, 2.0, 3.0)
    assert policy.compare_with(TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=original)) is original
    plan = plan_run("deidentify", PipelineConfig())
    assert plan.check_privacy and plan.keep_small_faces and plan.redact_unconfirmed and plan.cover_untracked
    told = plan_run("deidentify", replace(PipelineConfig(), {"deidentify.fail_closed": False,
                                                             "deidentify.method": "synthetic"}))
    assert not (told.check_privacy or told.keep_small_faces or told.redact_unconfirmed)
    assert told.cover_untracked and told.private  # still private: metadata stripped, preview only with --audit
    reenact = plan_run("reenact", PipelineConfig(), identity=SAMPLE_PHOTO)
    assert not (reenact.check_privacy or reenact.cover_untracked or reenact.private)


# --- untracked detections ----------------------------------------------------------------

def _detections(*boxes: list[float]) -> FaceDetections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    return FaceDetections(b, np.zeros((len(b), 5, 2), np.float32), np.ones(len(b), np.float32))


def test_detections_no_track_covers_become_failed_records() -> None:
    tracked = np.array([[20.0, 24.0, 60.0, 70.0]], np.float32)
    raw = _detections([22.0, 25.0, 61.0, 69.0], [70.0, 5.0, 90.0, 30.0])
    out = untracked_faces(raw, tracked)
    assert len(out) == 1
    assert out[0].track_id == -1 and out[0].failed == "untracked"
    assert np.array_equal(out[0].box, raw.boxes[1])
    # five points (float [5,2], like every record), all zero: nothing a check could align
    assert out[0].points.shape == (5, 2) and not out[0].points.any()


def test_every_detection_is_untracked_when_no_track_was_released() -> None:
    raw = _detections([22.0, 25.0, 61.0, 69.0], [70.0, 5.0, 90.0, 30.0])
    assert [r.box.tolist() for r in untracked_faces(raw, np.zeros((0, 4), np.float32))] == raw.boxes.tolist()


def test_cover_needs_more_than_the_cover_iou() -> None:
    # IoU exactly 0.3 with the tracked box: not covered; a bit more: covered
    tracked = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    # box [0,0,10,w]: IoU = w/10 with a 10x10 box when w <= 10
    assert len(untracked_faces(_detections([0.0, 0.0, 3.0, 10.0]), tracked)) == 1
    assert len(untracked_faces(_detections([0.0, 0.0, 3.2, 10.0]), tracked)) == 0


# --- small faces -------------------------------------------------------------------------

@pytest.mark.parametrize(("box", "small"), [
    ((10.0, 100.0, 40.0, 120.0), False),  # 30 x 20: exactly the minimum side is replaced
    ((10.0, 100.0, 40.0, 119.5), True),   # 30 x 19.5: too short
    ((100.0, 10.0, 119.5, 40.0), True),   # 19.5 x 30: too narrow
    ((100.0, 300.0, 125.0, 330.0), False),
    ((300.0, 100.0, 318.0, 500.0), True),
    ((10.0, 100.0, 25.0, 140.0), True),   # 15 wide, placed low in the frame
])
def test_a_face_with_a_side_under_min_face_size_is_too_small(box: tuple[float, ...], small: bool) -> None:
    # deidentify redacts such a face instead of replacing it (FaceReplacer sets record.failed)
    assert too_small(np.array(box, np.float32), 20.0) is small


# --- redaction ---------------------------------------------------------------------------

def _slot(*records: FaceRecord) -> FrameSlot:
    return FrameSlot(0, _textured(), 0, faces=list(records), tracked=True)


def test_a_run_without_the_ladder_counts_every_face_and_redacts_nothing() -> None:
    report = RunReport("similarity_to_target")
    untracked = FaceRecord(-1, BOX.copy(), np.zeros((5, 2), np.float32), failed="untracked")
    count_faces([_slot(_record(0, failed="x"), untracked), _slot(_record(1))], report)
    assert report.counts["faces_blurred"] == 0 and report.counts["faces_replaced"] == 1
    assert (report.tracks[0].frames, report.tracks[0].blurred, report.tracks[0].replaced) == (1, 0, 0)
    assert (report.tracks[1].frames, report.tracks[1].replaced) == (1, 1)
    assert -1 not in report.tracks and report.counts["untracked_detections_blurred"] == 0


# --- the synthetic identity draw ---------------------------------------------------------

def test_draw_keeps_the_first_candidate_below_the_threshold() -> None:
    original = _unit(1.0, 0.0, 0.0)
    near, far = _unit(1.0, 0.2, 0.0), _unit(0.0, 1.0, 0.0)
    seeds: list[int] = []
    pool = {0: near, 1: near, 2: far}

    def candidate(seed: int) -> torch.Tensor:
        seeds.append(seed)
        return pool[len(seeds) - 1]

    policy = SyntheticIdentities(candidate, 0.5, seed=3, max_draws=5)
    got = policy.identity_for(4, lambda: original)
    assert got.code is far and got.draws == 3 and got.failed is None
    assert got.similarity_to_original == pytest.approx(0.0, abs=1e-6)
    base = 3 * 1_000_003 + 4 * 10_007
    assert seeds == [base, base + 1, base + 2]


def test_redraw_continues_the_tracks_seeded_sequence() -> None:
    original = _unit(1.0, 0.0, 0.0)
    near, far, other = _unit(1.0, 0.2, 0.0), _unit(0.0, 1.0, 0.0), _unit(0.0, 0.0, 1.0)
    seeds: list[int] = []
    sequence = [far, near, other, near, near, near]

    def candidate(seed: int) -> torch.Tensor:
        seeds.append(seed)
        return sequence[len(seeds) - 1]

    seed = 2**62 + 5  # large: the seeds wrap into [0, 2**63)
    policy = SyntheticIdentities(candidate, 0.5, seed=seed, max_draws=2)
    first = policy.identity_for(4, lambda: original)
    assert first.code is far and first.draws == 1
    # the output failed the check: the next candidates of the same sequence, the first one far enough,
    # as a new identity (the first one is left as it was: the report keeps both)
    second, code = policy.redraw(4, first)
    assert code is other and second.code is other and second.draws == 3
    assert second.similarity_to_original == pytest.approx(0.0, abs=1e-6)
    assert first.code is far and first.draws == 1
    assert policy.identity_for(4, lambda: original) is second, "the track keeps its new identity"
    # none far enough in max_draws more: no code, the draws are counted, the code kept
    third, code = policy.redraw(4, second)
    assert code is None and third.draws == 5 and third.code is other
    assert seeds == [(seed * 1_000_003 + 4 * 10_007 + i) % 2**63 for i in range(5)]
    assert all(0 <= s < 2**63 for s in seeds)
    # a track without an original face gets nothing
    lost = TrackIdentity(code=None)
    assert policy.redraw(9, lost) == (lost, None) and len(seeds) == 5


def test_a_redraw_exactly_at_the_threshold_is_not_kept() -> None:
    original = _unit(1.0, 0.0, 0.0)
    at = _unit(0.5, 0.75**0.5, 0.0)  # similarity 0.5 to the original: the threshold itself
    sequence = iter([_unit(0.0, 1.0, 0.0), at])
    policy = SyntheticIdentities(lambda _seed: next(sequence), 0.5, seed=0, max_draws=1)
    first = policy.identity_for(0, lambda: original)
    assert policy.redraw(0, first)[1] is None


def test_no_candidate_below_the_threshold_leaves_the_track_without_identity() -> None:
    original = _unit(1.0, 0.0, 0.0)
    policy = _policy(threshold=0.5, codes=[_unit(1.0, 0.1, 0.0)], max_draws=2)
    got = policy.identity_for(0, lambda: original)
    assert got.code is None and got.draws == 2 and got.failed and "2 draws" in got.failed
    # a candidate exactly at the threshold is not far enough
    at = SyntheticIdentities(lambda s: _unit(1.0, 0.0, 0.0), 1.0, seed=0, max_draws=1)
    assert at.identity_for(0, lambda: original).code is None
    with pytest.raises(ConfigError):
        _policy(max_draws=0)


def test_a_person_seen_again_keeps_their_identity_only_while_it_passes() -> None:
    alice, bob = _unit(1.0, 0.0, 0.0), _unit(0.0, 0.0, 1.0)
    policy = _policy(threshold=0.5, codes=[_unit(0.0, 1.0, 0.0)])
    first = policy.identity_for(0, lambda: alice)
    again = policy.identity_for(1, lambda: _unit(1.0, 0.05, 0.0))
    assert again.code is first.code and again.draws == 0
    assert again.similarity_to_original == pytest.approx(0.05, abs=0.01)
    # someone else draws their own
    assert policy.identity_for(2, lambda: bob).draws == 1
    # the kept identity would now be too close to this face: a new draw instead
    strict = _policy(threshold=0.5, codes=[_unit(0.0, 1.0, 0.0), _unit(0.0, 0.0, 1.0)])
    strict.identity_for(0, lambda: _unit(1.0, 0.0, 0.0))
    close_to_code = _unit(1.0, 0.9, 0.0)  # same person (sim 0.74) but also near the code (0.67)
    got = strict.identity_for(1, lambda: close_to_code)
    assert got.draws >= 1 and got.code is not None
    assert float(torch.dot(got.code, close_to_code)) < 0.5
    # a track already known keeps its identity without embedding again
    assert policy.identity_for(0, lambda: pytest.fail("embedded twice")) is first


def test_same_person_needs_the_threshold_and_a_code() -> None:
    policy = _policy(threshold=0.5, codes=[_unit(0.0, 1.0, 0.0)])
    policy.identities[0] = TrackIdentity(code=None, original=_unit(1.0, 0.0, 0.0), failed="none")
    assert policy.same_person(_unit(1.0, 0.0, 0.0)) is None
    policy.identities[1] = TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=_unit(1.0, 0.0, 0.0))
    assert policy.same_person(_unit(0.0, 0.0, 1.0)) is None  # sim 0 to the earlier original
    assert policy.same_person(_unit(1.0, 0.0, 0.0)) is not None
    # similarity exactly at the threshold counts as the same person
    from reenact.faces import cosine_similarity

    at = _unit(0.5, 0.0, 0.75**0.5)
    edge = _policy(threshold=float(cosine_similarity(at[None], _unit(1.0, 0.0, 0.0)[None]).reshape(-1)[0]))
    edge.identities[0] = TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=_unit(1.0, 0.0, 0.0))
    assert edge.same_person(at) is not None
    # the kept identity exactly at the threshold to this face is too close: not kept
    face, code = _unit(1.0, 0.5, 0.0), _unit(0.0, 1.0, 0.0)
    close = _policy(threshold=float(cosine_similarity(code[None], face[None]).reshape(-1)[0]))
    close.identities[0] = TrackIdentity(code=code, original=_unit(1.0, 0.0, 0.0))
    assert close.same_person(face) is None
    # an earlier track without a code (or without an original) is never the one matched
    later = _policy(threshold=0.5)
    later.identities[0] = TrackIdentity(code=_unit(0.0, 1.0, 0.0), original=_unit(1.0, 0.0, 0.0))
    later.identities[1] = TrackIdentity(code=None, original=_unit(1.0, 0.0, 0.0), failed="none")
    later.identities[2] = TrackIdentity(code=_unit(0.0, 0.0, 1.0), original=None)
    kept = later.same_person(_unit(1.0, 0.0, 0.0))
    assert kept is not None and torch.equal(kept.code, _unit(0.0, 1.0, 0.0))


def test_describe_reports_the_draw() -> None:
    policy = _policy()
    got = policy.identity_for(0, lambda: _unit(1.0, 0.0, 0.0))
    desc = policy.describe(got)
    assert desc is not None
    assert desc["draws"] == 1 and desc["failed"] is None and desc["code"] == [0.0, 1.0, 0.0]
    assert desc["similarity_to_original"] == pytest.approx(0.0, abs=1e-6)
    exact = policy.describe(TrackIdentity(code=_unit(1.0, 2.0, 3.0), draws=2))
    assert exact is not None and exact["code"] == [0.26726, 0.53452, 0.80178]  # five decimals
    none = policy.describe(TrackIdentity(code=None, failed="f"))
    assert none is not None and none["code"] is None and none["failed"] == "f"


def test_a_runs_policy_takes_the_deidentify_settings() -> None:
    from types import SimpleNamespace

    pack = SimpleNamespace(generator=SimpleNamespace(img_resolution=256), device=torch.device("cpu"),
                           match_threshold=0.6)
    config = replace(PipelineConfig(), {"seed": 11, "deidentify.max_draws": 4, "deidentify.threshold": 0.42,
                                        "deidentify.method": "synthetic"})
    policy = make_policy(plan_run("deidentify", config).bind(pack), pack)  # type: ignore[arg-type]
    assert isinstance(policy, SyntheticIdentities)
    assert (policy.threshold, policy.seed, policy.max_draws) == (0.42, 11, 4)
    assert policy.candidate.truncation == config.deidentify.truncation  # type: ignore[attr-defined]
    unset = plan_run("deidentify", replace(config, {"deidentify.threshold": None})).bind(pack)  # type: ignore[arg-type]
    assert unset.threshold == 0.6, "no deidentify.threshold: the pack's same-person threshold"


def test_fail_closed_needs_detection_on_every_frame() -> None:
    every_other = {"tracker.detect_every": 2, "deidentify.method": "synthetic"}
    with pytest.raises(ConfigError, match="detect_every"):
        plan_run("deidentify", replace(PipelineConfig(), every_other))
    with pytest.raises(ConfigError, match="detect_every"):
        plan_run("deidentify", replace(PipelineConfig(), {**every_other, "deidentify.method": "blur"}))
    assert plan_run("deidentify", replace(PipelineConfig(), {**every_other, "deidentify.fail_closed": False})
                    ).tracker_detects


# --- calibrated thresholds ---------------------------------------------------------------

def test_privacy_thresholds_cannot_be_changed_at_run_time() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        PRIVACY_THRESHOLDS["dlib-resnet"]["tight"].threshold = 0.99  # type: ignore[misc]


def test_privacy_thresholds_come_from_the_calibration_or_the_override() -> None:
    assert privacy_threshold("arcface-onnx", "tight") == PRIVACY_THRESHOLDS["arcface-onnx"]["tight"].threshold
    assert privacy_threshold("dlib-resnet", "loose") == pytest.approx(0.9206)
    assert privacy_threshold("arcface-onnx", "tight", override=0.2) == 0.2
    assert privacy_threshold("unknown", "tight", override=0.0) == 0.0
    with pytest.raises(ConfigError, match="calibrate"):
        privacy_threshold("unknown", "tight")


class _Encoder:
    """A stand-in identity encoder that records what it was asked to embed."""

    crop_size = 112

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []

    def template(self) -> torch.Tensor:
        return torch.tensor([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.calls.append(("embed", points))
        return torch.ones(points.shape[0], 4)

    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        self.calls.append(("aligned", crops))
        return torch.full((crops.shape[0], 4), 2.0)


def test_loose_chip_shrinks_the_template_towards_the_centre() -> None:
    from reenact.faces.privacy_thresholds import LOOSE_SCALE, chip_template

    enc = _Encoder()
    assert torch.equal(chip_template(enc, "tight"), enc.template())  # type: ignore[arg-type]
    loose = chip_template(enc, "loose")  # type: ignore[arg-type]
    centre = (112 - 1) / 2.0
    assert torch.allclose(loose, (enc.template() - centre) * 0.7 + centre)
    assert LOOSE_SCALE == 0.7
    # the eyes are closer together: the face fills less of the chip
    assert float(loose[1, 0] - loose[0, 0]) == pytest.approx(0.7 * (73.5 - 38.3), rel=1e-5)
    with pytest.raises(ConfigError, match="chip"):
        chip_template(enc, "wide")  # type: ignore[arg-type]


def test_embed_with_chip_uses_the_model_alignment_or_a_loose_crop() -> None:
    from reenact.faces.privacy_thresholds import chip_template, embed_with_chip

    enc = _Encoder()
    frames = torch.zeros(1, 200, 200, 3, dtype=torch.uint8)
    frames[0, 60:140, 60:140] = 255  # a bright square where the face is
    points = chip_template(enc, "tight")[None] + 44.0  # a face at the chip's own scale, offset
    tight = embed_with_chip(enc, frames, torch.zeros(1, dtype=torch.long), points, "tight")  # type: ignore[arg-type]
    assert enc.calls[-1][0] == "embed" and float(tight[0, 0]) == 1.0
    loose = embed_with_chip(enc, frames, torch.zeros(1, dtype=torch.long), points, "loose")  # type: ignore[arg-type]
    kind, crops = enc.calls[-1]
    assert kind == "aligned" and float(loose[0, 0]) == 2.0
    assert crops.shape[-2:] == (112, 112) or crops.shape[1:3] == (112, 112)
