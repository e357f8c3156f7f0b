"""The CLI's guess of a run's detection (made before torch loads) is what the run resolves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reenact.cli import build_parser
from reenact.cli.video import early_schedule
from reenact.pipeline import PipelineConfig, plan_run


@pytest.mark.parametrize("mode, flags", [("deidentify", []), ("deidentify", ["--method", "blur"]),
                                         ("deidentify", ["--method", "synthetic"]), ("reenact", ["--identity", "x"])])
def test_early_schedule_is_the_default_runs_detection(mode: str, flags: list[str], fixtures: Path) -> None:
    args = build_parser(mode).parse_args(["clip.mp4", *flags])
    schedule = early_schedule(args, mode)  # type: ignore[arg-type]
    assert schedule is not None
    config = PipelineConfig()
    if "--method" in flags:
        config = dataclasses.replace(config, deidentify=dataclasses.replace(config.deidentify, method=flags[1]))
    photo = fixtures / "images" / "deepface" / "img1.jpg" if mode == "reenact" else None
    plan = plan_run(mode, config, identity=photo)  # type: ignore[arg-type]
    # the detector as the run's pack loads it (reenact.pipeline.run.PackCache), and the cadence over it
    assert schedule.detector == dataclasses.replace(config.detector, score_threshold=plan.load_threshold,
                                                    min_face_size=0.0)
    assert (schedule.threshold, schedule.drop_under, schedule.full_every) == (
        plan.detection.threshold, plan.drop_under, plan.detection.full_every)
    assert (schedule.detector.light_scale, schedule.detector.light_min_face) == (
        plan.detection.light_scale, plan.detection.light_min_face)
    assert schedule.cut_threshold == config.tracker.scene_cut_threshold
    assert (schedule.chunk_size, schedule.chunk_bytes) == (config.read.chunk_size, config.read.chunk_bytes)


@pytest.mark.parametrize("flags", [["--set", "detector.full_every=2"], ["--config", "c.yaml"],
                                   ["--detector-threshold", "0.4"], ["--pack", "full"],
                                   ["--faces-backend", "insightface"], ["--detector-model", "det.onnx"]])
def test_no_early_guess_when_flags_may_change_the_detection(flags: list[str]) -> None:
    args = build_parser("deidentify").parse_args(["clip.mp4", *flags])
    assert early_schedule(args, "deidentify") is None
