"""Each setting reaches the part that reads it: the consumer is built from a config as the
pipeline builds it, and the setting changes what the consumer does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reenact.config import replace
from reenact.faces import FaceDetections
from reenact.faces.identity import OnnxArcFaceEncoder
from reenact.io import read_image
from reenact.models.stylegan2 import tiny_generator
from reenact.pipeline import (
    FaceReplacer,
    PackCache,
    PipelineConfig,
    build_tracker,
    cached_pack,
    make_mapping,
    plan_run,
)
from testing.models import MOBILEFACE, PFLD

CPU = torch.device("cpu")


def test_optimize_random_starts_follow_the_pipeline_seed(fixtures: Path) -> None:
    pack = SimpleNamespace(
        identity=OnnxArcFaceEncoder(MOBILEFACE.file(fixtures), 0.0, 1.0),
        generator=tiny_generator(seed=0, resolution=32), trained=False, mapper=None,
    )
    base = replace(PipelineConfig(device="cpu", mapper="optimize"), {
        "optimize.landmark_model.path": str(PFLD.file(fixtures)),
        "optimize.init_candidates": 3,
    })
    starts = {}
    for seed in (0, 0, 7):
        mapping = make_mapping(pack, replace(base, {"seed": seed}))
        assert mapping.mapper.seed == seed
        starts.setdefault(seed, []).append(mapping.mapper._candidates(4))
    assert torch.equal(starts[0][0], starts[0][1]), "the same seed gives the same starts"
    assert not torch.allclose(starts[0][0], starts[7][0]), "--seed changes the optimiser's random starts"


def _jittery_detections(n: int, seed: int = 0) -> list[FaceDetections]:
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        box = np.array([[40, 40, 140, 160]], np.float32) + gen.normal(0, 3, (1, 4)).astype(np.float32)
        pts = np.array([[[70, 85], [110, 85], [90, 110], [75, 135], [105, 135]]], np.float32)
        pts = pts + gen.normal(0, 3, pts.shape).astype(np.float32)
        out.append(FaceDetections(box, pts, np.ones(1, np.float32)))
    return out


def _track(config: PipelineConfig, dets: list[FaceDetections], encoder=None, frames=None) -> list:
    tracker = build_tracker(plan_run("deidentify", config), SimpleNamespace(detector=None, identity=encoder), fps=25.0)
    if frames is None:
        frames = torch.zeros(len(dets), 8, 8, 3, dtype=torch.uint8)
    return tracker.push(frames, dets) + tracker.flush()


def test_no_point_smoothing_leaves_the_trackers_points_as_detected() -> None:
    dets = _jittery_detections(20)
    off = replace(PipelineConfig(), {"smoothing.points.method": "none"})
    raw = np.stack([f.points[0] for f in _track(off, dets)])
    on = np.stack([f.points[0] for f in _track(PipelineConfig(), dets)])
    given = np.stack([d.points[0] for d in dets])
    assert np.array_equal(raw, given[-len(raw):]), "smoothing.points.method none: the points as detected"
    assert np.abs(np.diff(on, axis=0)).mean() < 0.7 * np.abs(np.diff(raw, axis=0)).mean()


def test_alignment_and_latent_smoothing_are_set_apart() -> None:
    config = replace(PipelineConfig(device="cpu"), {"smoothing.alignment.method": "none",
                                                    "smoothing.latent.method": "gaussian",
                                                    "smoothing.latent.window": 2})
    plan = plan_run("deidentify", config)
    pack = cached_pack(plan)
    replacer = FaceReplacer(plan.bind(pack), pack, 25.0)
    M = torch.tensor([[0.5, 0.0, 3.0], [0.0, 0.5, 4.0]])
    assert replacer.smooth_M.push(0, 0, M)[0][2] is M, "alignment: method none passes transforms through"
    w = torch.zeros(1, 8)
    assert replacer.smooth_w.push(0, 0, w) == [], "latent: the gaussian holds values back"
    swapped = replace(config, {"smoothing.alignment.method": "gaussian", "smoothing.latent.method": "none"})
    plan = plan_run("deidentify", swapped)
    pack = cached_pack(plan)
    replacer = FaceReplacer(plan.bind(pack), pack, 25.0)
    assert replacer.smooth_M.push(0, 0, M) == []
    assert replacer.smooth_w.push(0, 0, w)[0][2] is w


class ColourIdentity:
    """A stand-in identity model: the colour under a face's nose, as a unit vector."""

    name, dim = "colour", 3

    def embed(self, frames: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        nose = points[:, 2].round().long()
        colours = frames[index, nose[:, 1], nose[:, 0]].float()
        return torch.nn.functional.normalize(colours, dim=1)


def _two_people_swap_places(n: int = 12) -> tuple[torch.Tensor, list[FaceDetections]]:
    """Two heavily overlapping faces, red and blue, that swap places halfway."""
    frames = torch.zeros(n, 120, 200, 3, dtype=torch.uint8)
    dets = []
    for t in range(n):
        lefts = (0, 12) if t < n // 2 else (12, 0)  # red's x, blue's x
        boxes = [[left, 0, left + 100, 100] for left in lefts]
        pts = [[[left + 30, 40], [left + 70, 40], [left + 50, 60], [left + 35, 80], [left + 65, 80]]
               for left in lefts]
        dets.append(FaceDetections(np.array(boxes, np.float32), np.array(pts, np.float32),
                                   np.ones(2, np.float32)))
        for left, channel in zip(lefts, (0, 2), strict=True):  # each nose in its colour, 12 px apart
            frames[t, 58:63, left + 46 : left + 55, channel] = 255
    return frames, dets


def test_appearance_weight_changes_the_trackers_matching() -> None:
    frames, dets = _two_people_swap_places()
    points_off = {"smoothing.points.method": "none"}

    def red_track_nose_x(config: PipelineConfig) -> list[float]:
        tracked = _track(config, dets, encoder=ColourIdentity(), frames=frames)
        first = tracked[0]
        red = int(first.track_ids[int(np.argmin(first.points[:, 2, 0]))])  # red starts on the left
        return [float(f.points[list(f.track_ids).index(red), 2, 0]) for f in tracked if red in f.track_ids]

    by_position = red_track_nose_x(replace(PipelineConfig(), {**points_off, "tracker.appearance_weight": 0.0}))
    by_identity = red_track_nose_x(replace(PipelineConfig(), {**points_off, "tracker.appearance_weight": 0.5}))
    # without appearance the track stays where it is (IoU wins) and so follows blue after the swap
    assert by_position[-1] == pytest.approx(50.0)
    # with appearance it follows the red face to its new place
    assert by_identity[-1] == pytest.approx(62.0)


def test_detector_threshold_applies_without_reloading_models(fixtures: Path) -> None:
    from reenact.faces import DetectorSettings, make_detector

    cache = PackCache()
    photo = sorted((fixtures / "images").rglob("*.jpg"))[0]
    frame = read_image(photo)[None]
    for threshold in (0.3, 0.6, 0.9):
        config = replace(PipelineConfig(device="cpu"), {"detector.score_threshold": threshold})
        found = cache.get(plan_run("deidentify", config)).detector.detect(frame)[0]
        # the same faces as a detector loaded with that threshold
        direct = make_detector("offline", None, settings=DetectorSettings(score_threshold=threshold)).detect(frame)[0]
        assert np.allclose(found.boxes, direct.boxes) and np.allclose(found.scores, direct.scores), threshold
    assert cache.loads == 1, "a new detector threshold must not reload the models"
