"""Recall first: every face the pipeline sees is covered, however briefly or small it appears.

Frames are built from a real fixture face pasted onto a plain background, run through
:class:`FaceReplacer` (tiny pack, offline CenterFace) and judged by the pixels: a face is
covered when the output differs from the input inside its box.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reenact.config import replace
from reenact.faces import FaceDetections
from reenact.faces.detect import DetectorSettings, largest_face, make_detector
from reenact.io import FrameChunk
from reenact.io.images import read_image
from reenact.pipeline import FaceReplacer, PipelineConfig, cached_pack, plan_run
from reenact.pipeline.plan import SCORE_THRESHOLDS

CPU = torch.device("cpu")
SAMPLE_PHOTO = Path(__file__).resolve().parents[2] / "samples" / "astronaut_identity.jpg"
SIZE = 256


@pytest.fixture(scope="module")
def face(fixtures: Path) -> torch.Tensor:
    """A fixture face with some context, uint8 [96,96,3]."""
    image = torch.as_tensor(np.asarray(read_image(fixtures / "images/deepface/img1.jpg")))
    dets = make_detector("offline").detect(image[None])[0]
    x1, y1, x2, y2 = dets.boxes[largest_face(dets)].tolist()
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.75 * max(x2 - x1, y2 - y1)
    top, left = max(0, int(cy - half)), max(0, int(cx - half))
    crop = image[top : int(cy + half), left : int(cx + half)]
    return _resize(crop, 96)


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    out = F.interpolate(img.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear",
                        antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def _frame(*placed: tuple[torch.Tensor, int, int]) -> torch.Tensor:
    """A grey frame [SIZE,SIZE,3] with each (face, x, y) pasted (clipped to the frame)."""
    frame = torch.full((SIZE, SIZE, 3), 120, dtype=torch.uint8)
    for img, x, y in placed:
        h, w = img.shape[:2]
        fx1, fy1, fx2, fy2 = max(0, x), max(0, y), min(SIZE, x + w), min(SIZE, y + h)
        frame[fy1:fy2, fx1:fx2] = img[fy1 - y : fy2 - y, fx1 - x : fx2 - x]
    return frame


class MissingDetector:
    """Wraps a detector and finds nothing in the given frames, by either pass (a detector
    that misses a visible face)."""

    def __init__(self, detector, missed: list[torch.Tensor]) -> None:
        self.detector, self.missed = detector, missed
        self.name = detector.name

    def input_scale(self, height: int, width: int) -> float:
        return self.detector.input_scale(height, width)

    def detect(self, frames: torch.Tensor, scale: float = 1.0, release: bool = True) -> list[FaceDetections]:
        out = self.detector.detect(frames, scale)
        return [FaceDetections.empty() if any(torch.equal(f, m) for m in self.missed) else d
                for f, d in zip(frames, out, strict=True)]


def _run(frames: torch.Tensor, mode: str, missed: set[int] | None = None, chunk: int = 4,
         **settings: object) -> tuple[torch.Tensor, FaceReplacer]:
    config = replace(PipelineConfig(device="cpu"), dict(settings)) if settings else PipelineConfig(device="cpu")
    plan = plan_run(mode, config, identity=SAMPLE_PHOTO if mode == "reenact" else None)  # type: ignore[arg-type]
    pack = cached_pack(plan)
    plan = plan.bind(pack)
    if missed:
        pack = dataclasses.replace(pack, detector=MissingDetector(pack.detector, [frames[i] for i in missed]))
    target = torch.nn.functional.normalize(torch.randn(pack.identity.dim, generator=torch.Generator().manual_seed(1)),
                                           dim=0)
    replacer = FaceReplacer(plan, pack, 25.0, target=target if mode == "reenact" else None)
    chunks = [FrameChunk(frames[i : i + chunk], torch.arange(i, min(i + chunk, len(frames))), i)
              for i in range(0, len(frames), chunk)]
    out = torch.cat([c.frames for c in replacer(iter(chunks))])
    assert out.shape == frames.shape
    return out, replacer


def _changed(before: torch.Tensor, after: torch.Tensor, x: int, y: int, size: int) -> float:
    """Mean absolute difference inside the (clipped) box at x, y of side ``size``."""
    x1, y1, x2, y2 = max(0, x), max(0, y), min(SIZE, x + size), min(SIZE, y + size)
    return float((before[y1:y2, x1:x2].float() - after[y1:y2, x1:x2].float()).abs().mean())


def test_deidentify_defaults_to_a_recall_threshold_and_reenact_to_a_precise_one() -> None:
    config = PipelineConfig(device="cpu")
    deid = plan_run("deidentify", config)
    assert deid.detection.score_threshold == SCORE_THRESHOLDS["deidentify"] < 0.5
    assert plan_run("reenact", config, identity=SAMPLE_PHOTO).detection.score_threshold == 0.5
    assert plan_run("deidentify", replace(config, {"detector.score_threshold": 0.7})).detection.threshold == 0.7
    pack = cached_pack(deid)
    assert FaceReplacer(deid.bind(pack), pack, 25.0).detector.score_threshold == 0.2


@pytest.mark.parametrize("mode", ["reenact", "deidentify"])
def test_a_one_frame_clip_has_its_face_covered(face: torch.Tensor, mode: str) -> None:
    frames = _frame((face, 80, 70))[None]
    out, replacer = _run(frames, mode)
    assert _changed(frames[0], out[0], 80, 70, 96) > 4.0
    counts = replacer.report.counts
    assert counts["frames_with_faces"] == 1
    if mode == "reenact":
        assert counts["faces_replaced"] == 1, "reenact replaces a face seen in one frame"
    else:
        assert counts["unconfirmed_faces_redacted"] == 1 and counts["faces_blurred"] == 1


@pytest.mark.parametrize("mode", ["reenact", "deidentify"])
def test_a_face_seen_in_one_frame_in_the_middle_is_covered(face: torch.Tensor, mode: str) -> None:
    empty = _frame()
    frames = torch.stack([empty] * 5 + [_frame((face, 100, 60))] + [empty] * 5)
    out, replacer = _run(frames, mode)
    assert _changed(frames[5], out[5], 100, 60, 96) > 4.0
    assert all(_changed(frames[i], out[i], 0, 0, SIZE) < 0.5 for i in range(11) if i != 5), "no face elsewhere"


def test_a_face_the_detector_misses_in_some_frames_is_still_covered(face: torch.Tensor) -> None:
    frames = torch.stack([_frame((face, 60 + 3 * i, 60)) for i in range(12)])
    missed = {3, 4, 7, 8, 9}
    out, replacer = _run(frames, "deidentify", missed=missed)
    for i in range(12):
        assert _changed(frames[i], out[i], 60 + 3 * i, 60, 96) > 4.0, f"frame {i} (missed: {i in missed})"
    assert len(replacer.report.tracks) == 1, "one track, filled across the misses"


def test_a_face_cut_by_the_frame_border_is_covered(face: torch.Tensor) -> None:
    frames = torch.stack([_frame((face, -34, 80))] * 6)  # a third of the face outside the frame
    out, _replacer = _run(frames, "deidentify")
    for i in range(6):
        assert _changed(frames[i], out[i], -34, 80, 96) > 4.0, f"frame {i}"


def test_two_people_swapping_places_are_covered_in_every_frame(face: torch.Tensor, fixtures: Path) -> None:
    other_img = torch.as_tensor(np.asarray(read_image(fixtures / "images/deepface/img2.jpg")))
    dets = make_detector("offline").detect(other_img[None])[0]
    x1, y1, x2, y2 = (int(v) for v in dets.boxes[largest_face(dets)])
    other = _resize(other_img[max(0, y1 - 20) : y2 + 20, max(0, x1 - 20) : x2 + 20], 96)
    left, right = (16, 80), (144, 80)
    frames = torch.stack([_frame((face, *left), (other, *right))] * 5 + [_frame((face, *right), (other, *left))] * 5)
    out, _replacer = _run(frames, "deidentify")
    for i in range(10):
        for x, y in (left, right):
            assert _changed(frames[i], out[i], x, y, 96) > 4.0, f"frame {i}, face at x={x}"


def test_a_face_under_20_px_is_redacted_by_deidentify_and_left_by_reenact(face: torch.Tensor) -> None:
    small = _resize(face, 30)  # the face itself spans about 17 px of it
    frames = torch.stack([_frame((small, 110, 110))] * 6)
    found = make_detector("offline", None, DetectorSettings(min_face_size=0, score_threshold=0.2)).detect(frames[:1])[0]
    assert len(found) == 1 and (found.boxes[0, 2:] - found.boxes[0, :2]).min() < 20, "the fixture face is small"
    out, replacer = _run(frames, "deidentify")
    assert replacer.report.counts["small_faces_redacted"] == 6
    for i in range(6):
        assert _changed(frames[i], out[i], 110, 110, 30) > 4.0
    out, replacer = _run(frames, "reenact")
    assert replacer.report.counts["frames_with_faces"] == 0 and torch.equal(out, frames), "too small to reenact"


def test_a_face_under_synthetic_min_face_gets_its_head_box_redacted_instead_of_a_synthetic_face(
    face: torch.Tensor,
) -> None:
    frames = torch.stack([_frame((_resize(face, 150), 50, 50))] * 6)
    found = make_detector("offline", None, DetectorSettings(min_face_size=0, score_threshold=0.2)).detect(frames[:1])[0]
    side = float((found.boxes[0, 2:] - found.boxes[0, :2]).min())
    assert len(found) == 1 and 20 < side < 112, f"the fixture face spans {side:.0f} px"
    out, replacer = _run(frames, "deidentify", **{"deidentify.method": "synthetic"})
    counts = replacer.report.counts
    assert counts["small_faces_redacted"] == 6 and counts["faces_replaced"] == 0
    rungs = replacer.report.tracks[next(iter(replacer.report.tracks))].rungs
    assert set(rungs) <= {"blur", "head_blur", "fill", "solid"} and sum(rungs.values()) == 6, rungs  # face-shaped first
    assert all(_changed(frames[i], out[i], 50, 50, 150) > 4.0 for i in range(6))
    # no synthetic identity is drawn for a face that is never synthesized (the identity stage's cost)
    assert replacer.identities == {} and replacer.report.timer.seconds.get("identity", 0.0) == 0.0
    # with the setting off, the same face gets a synthetic identity
    _out, replacer = _run(frames, "deidentify", **{"deidentify.synthetic_min_face": 0.0,
                                                   "deidentify.method": "synthetic"})
    assert replacer.report.counts["small_faces_redacted"] == 0
    assert replacer.report.counts["faces_replaced"] > 0 and len(replacer.identities) == 1
