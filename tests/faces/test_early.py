"""Detection while torch loads (reenact.faces.early): torch-free, and the run's output unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reenact.faces.detect import CenterFaceDetector, DetectorSettings, ThresholdedDetector
from reenact.faces.early import EarlyDetections, EarlySchedule
from testing.media import cut_clip, read_frames

REPO = Path(__file__).resolve().parents[2]
LOADED = DetectorSettings(score_threshold=0.2, min_face_size=0.0)  # as a deidentify run loads CenterFace
SCHEDULE = EarlySchedule(LOADED, threshold=0.2, drop_under=0.0, full_every=4, cut_threshold=0.12,
                         chunk_size=16, chunk_bytes=8 << 20)


@pytest.fixture(scope="module")
def clip(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of the one-face 512x512 fixture clip."""
    return cut_clip(fixtures / "videos" / "liveportrait_d0.mp4", tmp_path_factory.mktemp("early") / "d0.mp4", 12)


def test_early_detection_runs_without_torch(clip: Path) -> None:
    code = ("import sys; from reenact.faces.early import EarlyDetections, EarlySchedule; "
            "from reenact.faces.detect import DetectorSettings; "
            "e = EarlyDetections(EarlySchedule(DetectorSettings(score_threshold=0.2, min_face_size=0.0), 0.2, 0.0, 4, "
            f"0.12, 16, 8 << 20)); e.run({str(clip)!r}, until=lambda: False); "
            "print(e.frames, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["12", "False"]


def test_served_detector_answers_kept_frames_as_it_would_detect_them(clip: Path) -> None:
    early = EarlyDetections(SCHEDULE)
    early.run(clip, until=lambda: False)
    assert early.frames == 12
    frames = read_frames(clip)
    plain = SCHEDULE.cadence(CenterFaceDetector(None, LOADED)).detect(frames)
    served = early.serve(ThresholdedDetector(CenterFaceDetector(None, LOADED), 0.5, 3.0))
    assert isinstance(served, ThresholdedDetector) and (served.score_threshold, served.min_face_size) == (0.5, 3.0)
    inner = served.detector
    answered = SCHEDULE.cadence(inner).detect(frames)
    assert inner.hits == 12 and inner.misses == 0  # every frame from the early pass
    for a, b in zip(plain, answered, strict=True):
        assert a.scale == b.scale and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.points, b.points)
        assert np.array_equal(a.scores, b.scores)
    assert sum(d.scale < 1.0 for d in answered) == 9  # the cadence's light passes were kept too
    # a frame not detected early (another picture) is detected, not answered
    other = np.ascontiguousarray(frames[:1, ::-1])
    assert len(inner.detect(other)) == 1


def test_served_answers_only_cpu_frames_of_the_same_shape_and_for_a_bounded_number_of_lookups(
        clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU run resizes its frames with torch, not OpenCV as the early pass did: its frames are
    detected, and the kept faces let go. The same bytes in another shape are another frame. A
    run whose cadence never asks for the kept frames stops looking them up."""
    import torch

    early = EarlyDetections(SCHEDULE)
    early.run(clip, until=lambda: False, max_frames=1)
    frames = read_frames(clip)
    served = early.serve(CenterFaceDetector(None, LOADED))
    kept = len(served.found)  # type: ignore[attr-defined]
    assert kept > 0
    reshaped = np.ascontiguousarray(frames[:1].reshape(1, frames.shape[1] // 2, frames.shape[2] * 2, 3))
    served.detect(reshaped)
    assert served.hits == 0 and len(served.found) == kept  # type: ignore[attr-defined]

    class OnGpu(torch.Tensor):  # a CPU tensor that says it is on a GPU
        @property
        def device(self) -> torch.device:  # type: ignore[override]
            return torch.device("cuda", 0)

    calls = []
    monkeypatch.setattr(served.detector, "detect", lambda f, s=1.0, r=True: calls.append(f) or [])  # type: ignore[attr-defined]
    served.detect(torch.from_numpy(frames[:1]).as_subclass(OnGpu))
    assert served.hits == 0 and served.found == {} and len(calls) == 1  # type: ignore[attr-defined]

    early2 = EarlyDetections(SCHEDULE)
    early2.run(clip, until=lambda: False, max_frames=1)
    bounded = early2.serve(CenterFaceDetector(None, LOADED))
    left = bounded.lookups_left  # type: ignore[attr-defined]
    monkeypatch.setattr(bounded.detector, "detect", lambda f, s=1.0, r=True: [])  # type: ignore[attr-defined]
    for _ in range(left):
        bounded.detect(reshaped)
    assert bounded.found  # type: ignore[attr-defined]
    bounded.detect(reshaped)
    assert bounded.found == {}  # type: ignore[attr-defined]


def test_another_detector_gets_nothing_from_the_early_pass(clip: Path) -> None:
    early = EarlyDetections(SCHEDULE)
    early.run(clip, until=lambda: False, max_frames=5)
    assert early.frames == 10  # stopped after the first chunk
    other = CenterFaceDetector(None, dataclasses.replace(LOADED, score_threshold=0.3))
    assert early.serve(other) is other  # other settings: its own answers only


def test_early_detection_stops_when_told_and_on_unreadable_files(clip: Path, tmp_path: Path) -> None:
    answers = iter([False] * 3 + [True] * 20)
    early = EarlyDetections(SCHEDULE)
    early.run(clip, until=lambda: next(answers))
    assert early.frames == 3  # asked to stop before the fourth frame
    threaded = EarlyDetections(SCHEDULE).start(clip, max_frames=5)
    thread = threaded._thread
    assert thread is not None
    thread.join(timeout=60)  # the first chunk (10 frames) detected
    served = threaded.serve(CenterFaceDetector(None, LOADED))  # stops the thread first, then serves
    assert not thread.is_alive()
    first = read_frames(clip)[:1]
    assert threaded.frames == 10 and len(served.detect(first)) == 1 and served.hits == 1  # type: ignore[attr-defined]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(clip.read_bytes()[:3000])
    broken = EarlyDetections(SCHEDULE)
    broken.run(bad, until=lambda: False)  # never raises: the run reports the file itself
    detector = CenterFaceDetector(None, LOADED)
    assert broken.serve(detector) is detector


def test_deidentify_output_is_the_same_with_and_without_early_detection(clip: Path, tmp_path: Path) -> None:
    """The CLI with the early pass (default flags) against the same run with a flag that turns it
    off but changes nothing else (--set with the default value): same frames, same report."""
    outputs, hits = {}, {}
    # the early pass whatever the machine's load (it runs only with an idle core), and how many
    # frames the run's detector took from it (printed at exit)
    script = ("import atexit, sys, reenact.cli.video as v, reenact.faces.early as e; v.idle_cores = lambda: 1; "
              "served = []; init = e._Served.__init__; "
              "e._Served.__init__ = lambda self, *a: (served.append(self), init(self, *a))[1]; "
              "atexit.register(lambda: print('HITS', sum(s.hits for s in served), file=sys.stderr)); "
              "from reenact.cli import deidentify_script; deidentify_script()")
    for name, extra in (("early", []), ("plain", ["--set", "detector.nms_iou=0.4"])):
        out = tmp_path / f"{name}.mp4"
        done = subprocess.run([sys.executable, "-c", script, str(clip), "--method", "blur", "-o", str(out), "--quiet",
                               "--threads", "2", *extra], check=True, cwd=REPO, capture_output=True, text=True)
        hits[name] = int(done.stderr.split("HITS")[-1].split()[0])
        report = json.loads(out.with_name(out.name + ".report.json").read_text())
        outputs[name] = (read_frames(out), {k: report[k] for k in ("counts", "tracks", "privacy", "frames")})
    assert hits["early"] > 0 and hits["plain"] == 0  # the early pass did answer frames
    assert np.array_equal(outputs["early"][0], outputs["plain"][0])
    assert outputs["early"][1] == outputs["plain"][1]
