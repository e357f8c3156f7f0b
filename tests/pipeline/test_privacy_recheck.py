"""The privacy check's re-check rule (:mod:`reenact.pipeline.privacy.guard`'s docstring): a
steady face on a redaction rung carries its track's last measured check for a few frames, and
is measured at once when it moves, changes size or pose, changes rung, or its redaction changes
the face less than it did.

The recogniser is the one-pixel fake of ``test_privacy_ladder`` (its tight chip sees the red
value at the face's centre); the faces are a dark patch on a bright frame, which the blur
brightens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_privacy_ladder import BOX, CX, CY, POINTS, PixelEncoder, guard

import reenact.pipeline.privacy.guard as guard_module
from reenact.blend import redact
from reenact.pipeline.privacy import Checker, ladder_for
from reenact.pipeline.slots import FaceRecord

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant

SIZE = float(BOX[2] - BOX[0])  # 24 px


class ChipCounter(PixelEncoder):
    """The one-pixel fake, counting the chips it embeds (originals, baselines and outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.chips = 0

    def embed(self, frames: torch.Tensor, frame_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.chips += int(points.shape[0])
        return super().embed(frames, frame_index, points)


def frame(dx: float = 0.0, dy: float = 0.0, mark: int = 255) -> torch.Tensor:
    """A bright frame with a dark 5x5 face centre, shifted by (dx, dy) px; ``mark``: the red of
    its top-left pixel (far from the face)."""
    out = torch.full((1, 64, 64, 3), 255, dtype=torch.uint8)
    x, y = round(CX + dx), round(CY + dy)
    out[0, y - 2 : y + 3, x - 2 : x + 3] = 0
    out[0, 0, 0, 0] = mark
    return out


def face(dx: float = 0.0, dy: float = 0.0, scale: float = 1.0, points: np.ndarray | None = None) -> FaceRecord:
    """The track's face: the fixture box and points shifted by (dx, dy) and scaled about the box centre."""
    centre = (BOX[:2] + BOX[2:]) / 2
    box = np.concatenate([(BOX[:2] - centre) * scale + centre, (BOX[2:] - centre) * scale + centre])
    pts = ((POINTS if points is None else points) - centre) * scale + centre
    shift = np.array([dx, dy], np.float32)
    return FaceRecord(0, (box + np.tile(shift, 2)).astype(np.float32), (pts + shift).astype(np.float32),
                      failed="redacted by --method blur")


def run(records: list[FaceRecord], frames: list[torch.Tensor], chunk: int = 1, threshold: float = 0.5,
        ladder: tuple[str, ...] = ladder_for("blur")):  # noqa: ANN201
    """The guard over one track's frames, ``chunk`` frames per call: (guard, report, outputs, chip counter)."""
    enc = ChipCounter()
    g, report = guard(ladder, [Checker(enc, "tight", threshold, "test")])  # type: ignore[arg-type]
    outputs = []
    for start in range(0, len(frames), chunk):
        part = torch.cat(frames[start : start + chunk])
        rows = range(part.shape[0])
        outputs.append(g.apply(part, part.clone(), [(j, records[start + j]) for j in rows],
                               [start + j for j in rows]))
    return g, report, torch.cat(outputs), enc


def measured_frames(report) -> list[int]:  # noqa: ANN001
    """The frames whose check was measured (the audit's per-frame entries with similarities)."""
    return [entry[0] for entry in report.tracks[0].privacy_frames if entry[2]]


def similarity(frames: torch.Tensor, out: torch.Tensor, records: list[FaceRecord]) -> list[float]:
    """The fake recogniser's similarity of each output face to its original."""
    enc = PixelEncoder()
    index = torch.arange(len(records))
    points = torch.from_numpy(np.stack([r.points for r in records]))
    return torch.nn.functional.cosine_similarity(enc.embed(out, index, points), enc.embed(frames, index, points)).tolist()


@pytest.mark.parametrize("chunk", [1, 12])
def test_a_steady_face_is_measured_every_4th_frame_and_redacted_on_every_frame(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    frames, records = [frame()] * 12, [face() for _ in range(12)]
    _g, report, out, enc = run(records, frames, chunk)
    assert measured_frames(report) == [0, 4, 8]
    track = report.tracks[0].summary("s")["privacy"]
    assert track["rungs"] == {"blur": 12} and track["carried"] == 9 and track["passed"]
    assert report.counts["privacy_checks_carried"] == 9 and report.counts["faces_blurred"] == 12
    carried = [e for e in report.tracks[0].privacy_frames if not e[2]]
    assert carried[0][3] == "carried from the check at frame 0" and carried[-1][3] == "carried from the check at frame 8"
    # a carried face is redacted like a measured one: every output face is below the operating point
    assert max(similarity(torch.cat(frames), out, records)) < 0.5
    assert all(torch.equal(out[j], out[0]) for j in range(12))
    # fewer chips embedded than when every face-frame is measured
    monkeypatch.setattr(guard_module, "RECHECK_FRAMES", 1)
    _g, every, _out, enc_every = run(records, frames, chunk)
    assert measured_frames(every) == list(range(12)) and every.counts["privacy_checks_carried"] == 0
    assert enc.chips < enc_every.chips / 2
    # every face measured: 12 outputs, and the original (with its baseline) of frames 0 and 8 only,
    # in one chunk as across chunks
    assert enc_every.chips == 12 + 2 * 2


@pytest.mark.parametrize(("change", "carried"), [
    ({"dx": 0.08 * SIZE}, True), ({"dx": 0.12 * SIZE}, False),         # the box's centre moves
    ({"dy": -0.08 * SIZE}, True), ({"dy": -0.12 * SIZE}, False),
    ({"scale": 1.08}, True), ({"scale": 1.12}, False),                 # it grows
    ({"scale": 0.92}, True), ({"scale": 0.88}, False),                 # it shrinks
    ({"mouth": 0.04 * SIZE}, True), ({"mouth": 0.06 * SIZE}, False),   # one point moves (the pose)
])
def test_a_face_that_moves_is_measured_at_once(change: dict[str, float], carried: bool) -> None:
    mouth = change.pop("mouth", 0.0)
    points = POINTS.copy()
    points[3, 1] += mouth
    moved = face(**change, points=points)
    frames = [frame()] * 3 + [frame(change.get("dx", 0.0), change.get("dy", 0.0))]
    _g, report, out, _enc = run([face(), face(), face(), moved], frames)
    assert measured_frames(report) == ([0] if carried else [0, 3])
    assert report.tracks[0].rungs == {"blur": 4}
    assert similarity(torch.cat(frames), out, [face(), face(), face(), moved])[3] < 0.5


def test_a_track_moved_to_another_rung_is_measured_at_once_on_it() -> None:
    enc = ChipCounter()
    g, report = guard(ladder_for("blur"), [Checker(enc, "tight", 0.5, "test")])  # type: ignore[arg-type]
    g.apply(frame(), frame(), [(0, face())], [0])
    g.apply(frame(), frame(), [(0, face())], [1])
    g.track_rung[0] = 1  # the track's rung moved on (fill) by a rule outside the check
    g.apply(frame(), frame(), [(0, face())], [2])
    g.apply(frame(), frame(), [(0, face())], [3])
    assert measured_frames(report) == [0, 2]
    assert [e[1] for e in report.tracks[0].privacy_frames] == ["blur", "blur", "fill", "fill"]


@pytest.mark.parametrize("chunk", [1, 6])
@pytest.mark.parametrize(("headroom", "measured"), [(0.055, list(range(6))), (0.065, [0, 4])])
def test_only_a_check_passed_with_headroom_is_carried(headroom: float, measured: list[int], chunk: int) -> None:
    frames, records = [frame()] * 6, [face() for _ in range(6)]
    _g, probe, _out, _enc = run(records[:1], frames[:1], threshold=0.99)
    sim = probe.tracks[0].max_similarity["pixel/tight"]
    _g, report, _out, _enc = run(records, frames, chunk, threshold=sim + headroom)
    assert sorted(measured_frames(report)) == measured and report.tracks[0].rungs == {"blur": 6}


def test_synthetic_faces_are_measured_on_every_frame() -> None:
    from test_privacy_ladder import FakeRender, paint_centre

    enc = ChipCounter()
    g, report = guard(ladder_for("synthetic"), [Checker(enc, "tight", 0.5, "test")], render=FakeRender(),
                      redraw=lambda _t: None)  # type: ignore[arg-type]
    for index in range(6):
        g.apply(frame(), paint_centre(frame(), 255), [(0, FaceRecord(0, BOX.copy(), POINTS.copy()))], [index])
    assert measured_frames(report) == list(range(6)) and report.tracks[0].rungs == {"synthetic": 6}


@pytest.mark.parametrize("chunk", [1, 12])
def test_a_blur_that_weakens_mid_track_is_measured_at_once_and_escalated(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hazard of carrying a check: the face holds still, its redaction stops working. From
    frame 5 on (marked) the face-shaped blur leaves the face as it was (the fill still works)."""

    def weakening(frame_: torch.Tensor, regions: torch.Tensor, method: str, shape: str = "ellipse",
                  source: torch.Tensor | None = None) -> None:
        if method == "blur" and shape == "ellipse" and int(frame_[0, 0, 0]) == 1:
            return
        redact.redact_faces_(frame_, regions, method, shape, source)

    monkeypatch.setattr(guard_module, "redact_faces_", weakening)
    frames, records = [frame()] * 5 + [frame(mark=1)] * 7, [face() for _ in range(12)]
    _g, report, out, _enc = run(records, frames, chunk)
    sims = similarity(torch.cat(frames), out, records)
    assert max(sims) < 0.5, f"a face was written as it was: {sims}"
    assert report.tracks[0].rungs == {"blur": 5, "fill": 7}
    assert 5 in measured_frames(report) and report.tracks[0].failed_checks == 0


@pytest.mark.parametrize("box", [[64, 10, 80, 30], [10, 64, 30, 80], [70, 10, 90, 30], [-30, -30, -1, -1]])
def test_the_change_of_a_face_outside_the_frame_is_none(box: list[float]) -> None:
    frames = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    assert guard_module.change(frames, frames + 9, 0, np.array(box, np.float32)) == 0.0


def test_the_change_is_measured_on_the_part_of_the_box_inside_the_frame() -> None:
    frames = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    out = frames.clone()
    out[0, 10:20, 54:64] = 30  # half of the box below is in the frame, all of it changed
    assert guard_module.change(frames, out, 0, np.array([54, 10, 74, 20], np.float32)) == pytest.approx(30.0)


def test_the_change_is_the_mean_difference_over_the_box_clipped_to_the_frame() -> None:
    frames = torch.zeros(1, 48, 64, 3, dtype=torch.uint8)
    ys, xs = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    out = ((xs + 2 * ys) % 200).to(torch.uint8)[None, :, :, None].repeat(1, 1, 1, 3)  # a different value per pixel
    # a box over the top-left corner: columns 0..20, rows 0..30 of the frame
    got = guard_module.change(frames, out, 0, np.array([-3.0, -2.0, 20.5, 30.2], np.float32))
    assert got == pytest.approx(float(out[0, 0:31, 0:21].float().mean()))
    # a box over the bottom-right corner: columns 50..63, rows 30..47
    got = guard_module.change(frames, out, 0, np.array([50.0, 30.0, 70.0, 60.0], np.float32))
    assert got == pytest.approx(float(out[0, 30:48, 50:64].float().mean()))


REF_BOX = np.array([10.0, 20.0, 30.0, 60.0])  # 20 wide, 40 high: size 40, centre (20, 40)
REF_POINTS = np.array([[15, 30], [25, 30], [20, 40], [16, 50], [24, 50]], np.float64)


@pytest.mark.parametrize(("box", "points", "steady"), [
    (REF_BOX, REF_POINTS, True),
    (REF_BOX + [4, 0, 4, 0], REF_POINTS + [4, 0], True),            # the centre moves 0.1 of the size
    (REF_BOX + [4.1, 0, 4.1, 0], REF_POINTS + [4.1, 0], False),
    (REF_BOX + [0, -4, 0, -4], REF_POINTS + [0, -4], True),
    (REF_BOX + [0, -4.1, 0, -4.1], REF_POINTS + [0, -4.1], False),
    (REF_BOX + [0, -2, 0, 2], REF_POINTS, True),                     # 44 high: 10 % larger
    (REF_BOX + [0, -2.1, 0, 2.1], REF_POINTS, False),
    (REF_BOX + [0, 2, 0, -2], REF_POINTS, True),                     # 36 high: 10 % smaller
    (REF_BOX + [0, 2.1, 0, -2.1], REF_POINTS, False),
    (REF_BOX + [-12, 0, 12, 0], REF_POINTS, True),                   # 44 wide, 40 high: size 44
    (REF_BOX + [-12.1, 0, 12.1, 0], REF_POINTS, False),              # 44.2 wide
    (REF_BOX, REF_POINTS + [[0, 0], [0, 0], [0, 0], [0, 2], [0, 0]], True),     # a point moves 0.05 of the size
    (REF_BOX, REF_POINTS + [[0, 0], [0, 0], [0, 0], [0, 2.1], [0, 0]], False),
    (REF_BOX, REF_POINTS + [[0, 0], [-2.1, 0], [0, 0], [0, 0], [0, 0]], False),
    (REF_BOX, REF_POINTS + [[0, 0], [0, 0], [0, 0], [0, 1.5], [0, 1.5]], True),  # each point within its bound
    (REF_BOX, np.full((5, 2), np.nan), False),
])
def test_steady_bounds_the_move_the_size_and_the_pose(box: np.ndarray, points: np.ndarray, steady: bool) -> None:
    assert guard_module.steady(box, points, REF_BOX, REF_POINTS) is steady


def test_a_face_its_redaction_does_not_change_is_carried_when_it_passed_unchanged() -> None:
    """A uniform face: the blur changes nothing, and at an operating point of 1.5 the face
    passes as it is, so a later frame whose blur also changes nothing carries that check."""
    flat = torch.full((1, 64, 64, 3), 255, dtype=torch.uint8)
    frames, records = [flat] * 4, [face() for _ in range(4)]
    _g, report, _out, _enc = run(records, frames, threshold=1.5)
    assert measured_frames(report) == [0] and report.tracks[0].carried == 3


def test_a_face_without_usable_points_ends_the_check_it_could_carry() -> None:
    """In one chunk (its faces start on the rung the track had when it began): frame 1 has no
    points and is filled solid, so frame 2 cannot carry frame 0's check and is measured."""
    frames = [frame()] * 4
    lost = face()
    lost.points = np.full((5, 2), np.nan, np.float32)
    _g, report, _out, _enc = run([face(), lost, face(), face()], frames, chunk=4)
    assert sorted(measured_frames(report)) == [0, 2]
    assert [e[1] for e in report.tracks[0].privacy_frames if e[0] == 1] == ["solid"]


def test_a_carried_face_measured_after_its_pixel_check_is_redacted_once() -> None:
    """Frame 2's face is a single dark pixel: the blur changes its box much less than the
    measured face's, so it is measured, on the blur already applied (not blurred twice)."""
    small = torch.full((1, 64, 64, 3), 255, dtype=torch.uint8)
    small[0, CY, CX] = 0
    frames = [frame(), frame(), small, frame()]
    _g, report, out, _enc = run([face() for _ in range(4)], frames)
    assert measured_frames(report) == [0, 2]
    _g, _alone, once, _enc = run([face()], [small])
    assert torch.equal(out[2], once[0])


def test_the_latest_measured_check_of_a_chunk_is_the_one_carried_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 0 passes close to its limit, so frames 1-3 (anchored to it) are measured after
    frame 4, in a later batch of the chunk: the next chunk still carries frame 4's check.
    (The blur at the faces' own scale: at the small-face strength both 9 px marks blur flat.)"""
    monkeypatch.setattr(redact, "SMALL_FACE", 0)
    near = torch.full((1, 64, 64, 3), 255, dtype=torch.uint8)
    near[0, CY - 4 : CY + 5, CX - 4 : CX + 5] = 0  # a larger dark face: its blurred centre stays darker
    _g, probe, _out, _enc = run([face()], [near], threshold=0.99)
    threshold = probe.tracks[0].max_similarity["pixel/tight"] + 0.03
    enc = ChipCounter()
    g, report = guard(ladder_for("blur"), [Checker(enc, "tight", threshold, "test")])  # type: ignore[arg-type]
    first = torch.cat([near] + [frame()] * 5)
    g.apply(first, first.clone(), [(j, face()) for j in range(6)], list(range(6)))
    second = torch.cat([frame()] * 2)
    g.apply(second, second.clone(), [(j, face()) for j in range(2)], [6, 7])
    assert measured_frames(report) == [0, 4, 1, 2, 3]  # 5, 6 and 7 carry frame 4's check


WIDE_BOX = np.array([10.0, 20.0, 50.0, 40.0])  # 40 wide, 20 high: size 40


@pytest.mark.parametrize(("dx", "steady"), [(4.0, True), (4.1, False)])
def test_steady_measures_a_wide_face_by_its_width(dx: float, steady: bool) -> None:
    points = REF_POINTS + [10, -10]
    assert guard_module.steady(WIDE_BOX + [dx, 0, dx, 0], points + [dx, 0], WIDE_BOX, points) is steady


def test_headroom_is_the_distance_to_the_limit_the_check_rule_applies() -> None:
    from reenact.pipeline.privacy import headroom, passes

    c = Checker(PixelEncoder(), "tight", 0.5, "test", allowance=0.02)  # type: ignore[arg-type]
    assert headroom({c.name: 0.4}, [c]) == pytest.approx(0.1)
    assert headroom({c.name: 0.71}, [c], {c.name: 0.7}) == pytest.approx(0.01)  # the baseline's limit, 0.72
    assert headroom({c.name: 0.6}, [c], {c.name: 0.3}) == pytest.approx(-0.1)
    for sim, base in ((0.4, None), (0.71, 0.7), (0.73, 0.7)):
        baselines = None if base is None else {c.name: base}
        assert (headroom({c.name: sim}, [c], baselines) > 0) == passes({c.name: sim}, [c], baselines)
