"""DetectionCadence: every frame searched, the full pass on a clock, on cuts and after a loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reenact.errors import ConfigError
from reenact.faces import FaceDetections
from reenact.faces.cadence import FOUND_IOU, DetectionCadence
from reenact.faces.detect import DetectorSettings, make_detector
from reenact.faces.track import FaceTracker, TrackerSettings
from reenact.io.images import read_image
from reenact.pipeline.settings import PipelineConfig

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant: every frame is searched

BIG = np.array([10, 12, 30, 36], np.float32)    # 20 x 24 px
SMALL = np.array([44, 36, 48, 41], np.float32)  # 4 x 5 px: what only the full pass finds
H, W = 48, 64


def _dets(boxes: list[np.ndarray], scale: float, score: float = 0.9) -> FaceDetections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    points = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None], 5, axis=1).astype(np.float32)
    return FaceDetections(b, points, np.full(len(b), score, np.float32), scale)


class ScriptedDetector:
    """Finds BIG in every frame (``light_big`` instead with the light pass; nothing with the
    light pass in the ``blind`` frames), and SMALL in the frames listed in ``small`` with the
    full pass only (with either when ``small_in_light``). The frame index is read from pixel
    (0, 0). Records (frame index, scale) per frame. Its full pass sees 2 input pixels per
    frame pixel on these 48 x 64 frames (a made-up rule of both sides, so a swapped one shows)."""

    name = "scripted"

    def __init__(self, small: set[int] = frozenset(), small_in_light: bool = False, blind: set[int] = frozenset(),
                 light_big: np.ndarray = BIG) -> None:
        self.small, self.small_in_light, self.blind, self.light_big = small, small_in_light, blind, light_big
        self.passes: list[tuple[int, float]] = []
        self.released: list[int] = []  # frames after which the detector may free its memory

    def input_scale(self, height: int, width: int) -> float:
        return 6144.0 / (height * width)

    def detect(self, frames: torch.Tensor, scale: float = 1.0, release: bool = True) -> list[FaceDetections]:
        out = []
        for frame in frames:
            t = int(frame[0, 0, 0])
            self.passes.append((t, scale))
            if release:
                self.released.append(t)
            light = scale != 1.0
            boxes = [] if light and t in self.blind else [self.light_big if light else BIG]
            if t in self.small and (not light or self.small_in_light):
                boxes.append(SMALL)
            out.append(_dets(boxes, scale))
        return out


def _frames(start: int, count: int, value: int = 100) -> torch.Tensor:
    frames = torch.full((count, H, W, 3), value, dtype=torch.uint8)
    frames[:, 0, 0, 0] = torch.arange(start, start + count, dtype=torch.uint8)
    return frames


def _cadence(detector: ScriptedDetector, light_min_face: float = 0.0, cut: float = 0.12) -> DetectionCadence:
    return DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=cut, light_min_face=light_min_face)


def _run(cadence: DetectionCadence, frames: torch.Tensor, chunk: int) -> list[FaceDetections]:
    out: list[FaceDetections] = []
    for k in range(0, len(frames), chunk):
        out += cadence.detect(frames[k : k + chunk])
    return out


def _full(detector: ScriptedDetector, count: int) -> list[int]:
    """The frames that got the full pass, after checking each frame got exactly one pass."""
    assert sorted(t for t, _s in detector.passes) == list(range(count)), "one pass per frame"
    return [t for t, s in sorted(detector.passes) if s == 1.0]


@pytest.mark.parametrize("chunk", [1, 3, 8, 20])
def test_full_pass_every_k_frames_light_between_whatever_the_chunking(chunk: int) -> None:
    detector = ScriptedDetector()
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 20), chunk)
    assert len(out) == 20 and all(len(d) == 1 for d in out), "every frame is searched and its face found"
    assert _full(detector, 20) == [0, 4, 8, 12, 16]
    assert [d.scale for d in out] == [1.0 if t % 4 == 0 else 0.5 for t in range(20)]
    assert (cadence.full_frames, cadence.light_frames, cadence.held_faces) == (5, 15, 0)


def test_the_detector_keeps_its_memory_through_a_chunk_and_frees_it_at_the_end() -> None:
    detector = ScriptedDetector()
    _run(_cadence(detector), _frames(0, 20), 8)
    assert detector.released == [7, 15, 19]


def test_full_every_1_never_runs_the_light_pass() -> None:
    detector = ScriptedDetector()
    cadence = DetectionCadence(detector, full_every=1, light_scale=0.5, cut_threshold=0.12, light_min_face=0.0)
    _run(cadence, _frames(0, 7), 3)
    assert _full(detector, 7) == list(range(7)) and cadence.light_frames == 0


@pytest.mark.parametrize(("chunk", "cut", "full"), [
    (20, 6, [0, 4, 6, 10]),  # the cut inside the first chunk
    (5, 6, [0, 4, 6, 10]),   # the cut on a later chunk's second frame
    (3, 5, [0, 4, 5, 9]),    # the cut on a chunk's last frame: the next chunk compares with it
])
def test_a_scene_cut_gets_the_full_pass_and_restarts_the_clock(chunk: int, cut: int, full: list[int]) -> None:
    detector = ScriptedDetector()
    frames = torch.cat([_frames(0, cut, value=30), _frames(cut, 12 - cut, value=220)])
    _run(_cadence(detector), frames, chunk)
    assert _full(detector, 12) == full


def test_a_quarter_of_the_frame_changing_is_no_cut_at_a_threshold_of_a_quarter() -> None:
    frames = _frames(0, 12)
    frames[6:, 36:] = 200  # 12 of 48 rows change at frame 6: a histogram distance of exactly 0.25
    detector = ScriptedDetector()
    _run(_cadence(detector, cut=0.25), frames, 12)
    assert _full(detector, 12) == [0, 4, 8], "a distance at the threshold is not a cut"
    detector = ScriptedDetector()
    _run(_cadence(detector, cut=0.24), frames, 12)
    assert _full(detector, 12) == [0, 4, 6, 10], "above it, it is"


def test_a_face_the_light_pass_loses_is_held_one_frame_then_looked_for_at_full_cost() -> None:
    detector = ScriptedDetector(small={0, 1, 2, 3, 4, 5, 6, 7})  # SMALL on screen for frames 0-7
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 12), 12)
    assert _full(detector, 12) == [0, 2, 4, 6, 8], "a loss brings the next full pass forward, then the clock runs"
    for t in (1, 3, 5, 7):  # light frames: SMALL held where the previous frame had it
        assert len(out[t]) == 2 and np.array_equal(out[t].boxes[1], SMALL) and out[t].scale == 0.5
        assert np.array_equal(out[t].points[1], out[t - 1].points[1]) and out[t].scores[1] == out[t - 1].scores[1]
    assert all(len(out[t]) == 1 for t in (8, 9, 10, 11)), "gone from frame 8: nothing held after"
    assert cadence.held_faces == 4


def test_a_light_pass_that_finds_nothing_holds_every_face() -> None:
    detector = ScriptedDetector(blind={1})
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 6), 6)
    assert np.array_equal(out[1].boxes, BIG[None]) and out[1].scale == 0.5 and cadence.held_faces == 1
    assert _full(detector, 6) == [0, 2], "then the full pass, and the clock from it"


def test_a_face_overlapping_a_light_box_by_the_found_iou_is_found_again() -> None:
    assert FOUND_IOU == 0.25
    inside = np.array([10, 12, 30, 18], np.float32)  # 120 of BIG's 480 px: IoU exactly 0.25
    detector = ScriptedDetector(light_big=inside)
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 4), 4)
    assert cadence.held_faces == 0 and all(np.array_equal(out[t].boxes, inside[None]) for t in (1, 2, 3))
    thinner = np.array([10, 12, 30, 17.9], np.float32)  # just under
    detector = ScriptedDetector(light_big=thinner)
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 4), 4)
    assert cadence.held_faces >= 1 and len(out[1]) == 2


def test_a_face_too_small_for_the_light_pass_gets_the_next_frame_the_full_pass() -> None:
    # SMALL's 4 px side is 4 px of the light input (2 input px per frame px, light scale 0.5): under 5
    detector = ScriptedDetector(small={2, 3, 4}, small_in_light=True)
    cadence = _cadence(detector, light_min_face=5.0)
    out = _run(cadence, _frames(0, 10), 10)
    assert _full(detector, 10) == [0, 3, 4, 5, 9], "after each frame with SMALL; the clock runs from the last"
    assert cadence.held_faces == 0 and all(len(out[t]) == 2 for t in (2, 3, 4))
    # 4 px is not under 4 (and BIG's 20 px are far from it)
    detector = ScriptedDetector(small={2, 3, 4}, small_in_light=True)
    _run(_cadence(detector, light_min_face=4.0), _frames(0, 10), 10)
    assert _full(detector, 10) == [0, 4, 6], "only SMALL leaving after frame 4 (held at 5) adds one"


def test_a_face_found_again_by_the_light_pass_is_not_held() -> None:
    detector = ScriptedDetector()
    cadence = _cadence(detector)
    out = _run(cadence, _frames(0, 4), 4)
    assert all(len(d) == 1 for d in out) and cadence.held_faces == 0


def test_the_cadence_must_leave_gaps_the_tracker_fills() -> None:
    DetectionCadence.check(6, 5)
    with pytest.raises(ConfigError, match=r"full_every 7 .* tracker.max_gap 5.*at most 6"):
        DetectionCadence.check(7, 5)
    with pytest.raises(ConfigError, match="full_every"):
        DetectionCadence(ScriptedDetector(), 0, 0.5, 0.12, 8.0)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="light_scale"):
            DetectionCadence(ScriptedDetector(), 4, bad, 0.12, 8.0)
    DetectionCadence(ScriptedDetector(), 4, 1.0, 0.12, 8.0)  # a light pass at full size is allowed
    with pytest.raises(ConfigError, match="full_every 9"):  # a run's settings refuse it before any file is opened
        PipelineConfig(detector=DetectorSettings(full_every=9))
    PipelineConfig(detector=DetectorSettings(full_every=9), tracker=TrackerSettings(max_gap=8))


def test_settings_check_the_cadence() -> None:
    # the cadence of each mode is resolved by the run plan (tests/pipeline/test_pipeline_plan.py)
    for bad in ({"full_every": 0}, {"light_scale": 0.0}, {"light_scale": 1.5}, {"light_min_face": -1.0}):
        with pytest.raises(ConfigError):
            DetectorSettings(**bad)
    assert DetectorSettings().input_size(512, 512, 0.5) == (256, 256, 256, 256)
    assert DetectorSettings().input_size(720, 1280, 0.5) == (180, 320, 192, 320), "after the working size"


def test_the_light_pass_of_centerface_finds_a_big_face_where_the_full_pass_does(fixtures: Path) -> None:
    image = torch.as_tensor(np.asarray(read_image(fixtures / "images/deepface/img1.jpg")))
    detector = make_detector("offline", None, DetectorSettings(score_threshold=0.5))
    full, light = detector.detect(image[None])[0], detector.detect(image[None], 0.5)[0]
    assert len(full) >= 1 and full.scale == 1.0 and light.scale == 0.5
    h, w = image.shape[:2]
    assert detector.input_scale(h, w) == pytest.approx(min(1.0, 640 / max(h, w)), abs=2 / h)
    big = int(np.argmax(full.areas()))
    side = float((full.boxes[big, 2:] - full.boxes[big, :2]).min())
    error = np.abs(light.boxes - full.boxes[big]).max(axis=1).min()
    assert error < 0.1 * side, f"the light box is within 10% of the face's side ({error:.1f} px of {side:.0f})"


class CountingEncoder:
    name, dim = "counting", 4

    def __init__(self) -> None:
        self.faces = 0

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self.faces += len(index)
        return torch.nn.functional.normalize(torch.ones(len(index), self.dim), dim=1)


def test_the_tracker_takes_appearance_from_full_passes_only() -> None:
    encoder = CountingEncoder()
    tracker = FaceTracker(TrackerSettings(), encoder=encoder)
    frames = _frames(0, 2)
    two = [BIG, np.array([30, 2, 46, 18], np.float32)]
    tracker.push(frames, [_dets(two, 1.0), _dets(two, 0.5)])
    assert encoder.faces == 2, "the two faces of the full pass are embedded, the light pass's are not"
