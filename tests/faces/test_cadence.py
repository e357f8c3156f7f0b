"""DetectionCadence: every frame searched, the full pass on a clock, on cuts and after a loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reenact.errors import ConfigError
from reenact.faces import FaceDetections
from reenact.faces.cadence import DetectionCadence
from reenact.faces.detect import FULL_EVERY, DetectorSettings, make_detector
from reenact.faces.track import FaceTracker, TrackerSettings
from reenact.io.images import read_image

pytestmark = pytest.mark.privacy  # bench/mutation.py runs these per mutant: every frame is searched

BIG = np.array([10, 10, 30, 30], np.float32)
SMALL = np.array([40, 40, 44, 44], np.float32)  # what only the full pass finds


def _dets(boxes: list[np.ndarray], scale: float, score: float = 0.9) -> FaceDetections:
    b = np.stack(boxes).astype(np.float32)
    points = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None], 5, axis=1).astype(np.float32)
    return FaceDetections(b, points, np.full(len(b), score, np.float32), scale)


class ScriptedDetector:
    """Finds BIG in every frame, and SMALL in the frames listed in ``small`` only with the full
    pass (with either when ``small_in_light``). The frame index is read from pixel (0, 0).
    Records (frame index, scale) per frame. Its full pass sees 2 input pixels per frame pixel."""

    name = "scripted"

    def __init__(self, small: set[int] = frozenset(), small_in_light: bool = False) -> None:
        self.small, self.small_in_light, self.calls, self.passes = small, small_in_light, 0, []

    def input_scale(self, height: int, width: int) -> float:
        return 2.0

    def detect(self, frames: torch.Tensor, scale: float = 1.0) -> list[FaceDetections]:
        self.calls += 1
        out = []
        for frame in frames:
            t = int(frame[0, 0, 0])
            self.passes.append((t, scale))
            small = t in self.small and (scale == 1.0 or self.small_in_light)
            out.append(_dets([BIG] + ([SMALL] if small else []), scale))
        return out


def _frames(start: int, count: int, value: int = 100) -> torch.Tensor:
    frames = torch.full((count, 48, 48, 3), value, dtype=torch.uint8)
    frames[:, 0, 0, 0] = torch.arange(start, start + count, dtype=torch.uint8)
    return frames


def _run(cadence: DetectionCadence, frames: torch.Tensor, chunk: int) -> list[FaceDetections]:
    out: list[FaceDetections] = []
    for k in range(0, len(frames), chunk):
        out += cadence.detect(frames[k : k + chunk])
    return out


@pytest.mark.parametrize("chunk", [1, 3, 8, 20])
def test_full_pass_every_k_frames_light_between_whatever_the_chunking(chunk: int) -> None:
    detector = ScriptedDetector()
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12)
    out = _run(cadence, _frames(0, 20), chunk)
    assert len(out) == 20 and all(len(d) == 1 for d in out), "every frame is searched and its face found"
    assert sorted(detector.passes) == [(t, 1.0 if t % 4 == 0 else 0.5) for t in range(20)], "one pass per frame"
    assert [d.scale for d in out] == [1.0 if t % 4 == 0 else 0.5 for t in range(20)]
    assert (cadence.full_frames, cadence.light_frames, cadence.held_faces) == (5, 15, 0)
    if chunk == 20:  # light frames between two full ones go in one call
        assert detector.calls == 10


def test_full_every_1_never_runs_the_light_pass() -> None:
    detector = ScriptedDetector()
    cadence = DetectionCadence(detector, full_every=1, light_scale=0.5, cut_threshold=0.12)
    _run(cadence, _frames(0, 7), 3)
    assert {s for _t, s in detector.passes} == {1.0} and cadence.light_frames == 0


def test_a_scene_cut_gets_the_full_pass_and_restarts_the_clock() -> None:
    detector = ScriptedDetector()
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12)
    frames = torch.cat([_frames(0, 6, value=30), _frames(6, 6, value=220)])  # a cut at frame 6
    _run(cadence, frames, 5)
    full = [t for t, s in sorted(detector.passes) if s == 1.0]
    assert full == [0, 4, 6, 10], "frame 6 starts a shot: full pass, then 4 frames later"


def test_a_face_the_light_pass_loses_is_held_one_frame_then_looked_for_at_full_cost() -> None:
    detector = ScriptedDetector(small={0, 1, 2, 3, 4, 5, 6, 7})  # SMALL on screen for frames 0-7
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12)
    out = _run(cadence, _frames(0, 12), 12)
    full = [t for t, s in sorted(detector.passes) if s == 1.0]
    assert full == [0, 2, 4, 6, 8], "a loss brings the next full pass forward, then the clock runs from it"
    for t in (1, 3, 5, 7):  # light frames: SMALL held where the previous frame had it
        assert len(out[t]) == 2 and np.array_equal(out[t].boxes[1], SMALL) and out[t].scale == 0.5
        assert np.array_equal(out[t].points[1], out[t - 1].points[1]) and out[t].scores[1] == out[t - 1].scores[1]
    assert all(len(out[t]) == 1 for t in (8, 9, 10, 11)), "gone from frame 8: nothing held after"
    assert cadence.held_faces == 4


def test_a_face_too_small_for_the_light_pass_gets_the_next_frame_the_full_pass() -> None:
    # SMALL's 4 px side is 4 px of the light input (2 input px per frame px, light scale 0.5): under 5
    detector = ScriptedDetector(small={2, 3, 4}, small_in_light=True)
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12, light_min_face=5.0)
    out = _run(cadence, _frames(0, 10), 10)
    full = [t for t, s in sorted(detector.passes) if s == 1.0]
    assert full == [0, 3, 4, 5, 9], "after each frame with SMALL; the clock runs from the last full pass"
    assert cadence.held_faces == 0 and all(len(out[t]) == 2 for t in (2, 3, 4))
    # BIG's 20 px side is 20 px of the light input: the light pass may follow it
    detector = ScriptedDetector(small={2, 3, 4}, small_in_light=True)
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12, light_min_face=4.0)
    _run(cadence, _frames(0, 10), 10)
    full = [t for t, s in sorted(detector.passes) if s == 1.0]
    assert full == [0, 4, 6], "4 px is not under 4: only SMALL leaving after frame 4 (held at 5) adds one"


def test_a_face_found_again_by_the_light_pass_is_not_held() -> None:
    detector = ScriptedDetector()
    cadence = DetectionCadence(detector, full_every=4, light_scale=0.5, cut_threshold=0.12)
    out = _run(cadence, _frames(0, 4), 4)
    assert all(len(d) == 1 for d in out) and cadence.held_faces == 0


def test_the_cadence_must_leave_gaps_the_tracker_fills() -> None:
    DetectionCadence.check(6, 5)
    with pytest.raises(ConfigError, match=r"full_every 7 .* tracker.max_gap 5.*at most 6"):
        DetectionCadence.check(7, 5)
    with pytest.raises(ConfigError, match="full_every"):
        DetectionCadence(ScriptedDetector(), 0, 0.5, 0.12)
    with pytest.raises(ConfigError, match="light_scale"):
        DetectionCadence(ScriptedDetector(), 4, 0.0, 0.12)


def test_settings_resolve_the_cadence_per_mode() -> None:
    assert FULL_EVERY == {"reenact": 1, "deidentify": 4}
    assert DetectorSettings().for_mode("deidentify").full_every == 4
    assert DetectorSettings().for_mode("reenact").full_every == 1
    assert DetectorSettings(full_every=2).for_mode("deidentify").full_every == 2, "a set value wins"
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
