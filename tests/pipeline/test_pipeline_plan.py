"""The run plan: every decision of a run made once, before any model loads (reenact.pipeline.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reenact.config import replace
from reenact.errors import ConfigError, InputError
from reenact.pipeline import PipelineConfig, plan_run
from reenact.pipeline.plan import DETECTOR_LOAD_THRESHOLD, FULL_EVERY, SCORE_THRESHOLDS, OutputNames
from testing.media import cut_clip

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PHOTO, CLIP = SAMPLES / "astronaut_identity.jpg", SAMPLES / "astronaut_clip.mp4"


def test_each_mode_resolves_its_detection_and_a_set_value_wins() -> None:
    deid = plan_run("deidentify", PipelineConfig())
    reen = plan_run("reenact", PipelineConfig(), identity=PHOTO)
    assert (deid.detection.score_threshold, deid.detection.full_every) == (0.2, 4) == (
        SCORE_THRESHOLDS["deidentify"], FULL_EVERY["deidentify"])
    assert (reen.detection.score_threshold, reen.detection.full_every) == (0.5, 1)
    chosen = replace(PipelineConfig(), {"detector.score_threshold": 0.35, "detector.full_every": 2})
    assert (plan_run("deidentify", chosen).detection.threshold, plan_run("deidentify", chosen).detection.full_every
            ) == (0.35, 2)
    # photos are detected at the set threshold, else the detector's precision default, whatever the mode
    assert deid.photo_threshold == reen.photo_threshold == 0.5
    assert plan_run("deidentify", chosen).photo_threshold == 0.35


def test_the_detector_is_loaded_once_for_every_mode() -> None:
    assert DETECTOR_LOAD_THRESHOLD == SCORE_THRESHOLDS["deidentify"] == min(SCORE_THRESHOLDS.values())
    assert plan_run("deidentify", PipelineConfig()).load_threshold == DETECTOR_LOAD_THRESHOLD
    assert plan_run("reenact", PipelineConfig(), identity=PHOTO).load_threshold == DETECTOR_LOAD_THRESHOLD
    low = replace(PipelineConfig(), {"detector.score_threshold": 0.1})
    assert plan_run("deidentify", low).load_threshold == 0.1, "a lower setting loads the model with it"


def test_flags_follow_fail_closed_and_the_method() -> None:
    deid = plan_run("deidentify", replace(PipelineConfig(), {"deidentify.method": "synthetic"}))
    assert deid.policy == "synthetic" and deid.synthetic and deid.drop_under == 0.0
    assert deid.synthetic_min_face == PipelineConfig().deidentify.synthetic_min_face
    blur = plan_run("deidentify", replace(PipelineConfig(), {"deidentify.method": "blur"}))
    assert blur.classic and not blur.synthetic and blur.check_privacy and blur.synthetic_min_face == 0.0
    reen = plan_run("reenact", PipelineConfig(), identity=PHOTO)
    assert reen.policy == "target" and reen.drop_under == PipelineConfig().detector.min_face_size
    assert (reen.metadata, deid.metadata) == ("keep", "strip")


def test_a_deidentify_preview_needs_audit() -> None:
    assert not plan_run("deidentify", PipelineConfig(), preview=True).preview
    assert plan_run("deidentify", PipelineConfig(), preview=True).warnings
    assert plan_run("deidentify", PipelineConfig(), preview=True, audit=True).preview
    assert plan_run("reenact", PipelineConfig(), identity=PHOTO, preview=True).preview


def test_the_reference_photo_is_a_typed_value() -> None:
    plan = plan_run("deidentify", replace(PipelineConfig(), {"faces": f"reference:{PHOTO}"}))
    assert plan.faces == "reference" and plan.reference is not None and plan.reference.path == PHOTO
    assert plan.reference.image.shape[-1] == 3 and len(plan.reference.sha256) == 64
    assert plan_run("deidentify", PipelineConfig()).reference is None
    with pytest.raises(ConfigError, match="reference:IMAGE"):
        PipelineConfig(faces="reference:")
    with pytest.raises(InputError, match="reference photo"):
        plan_run("deidentify", replace(PipelineConfig(), {"faces": "reference:/nonexistent/who.jpg"}))


def test_reenact_needs_an_identity_and_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InputError, match="--identity"):
        plan_run("reenact", PipelineConfig())
    with pytest.raises(ConfigError, match="mode"):
        plan_run("blur", PipelineConfig())  # type: ignore[arg-type]


def test_the_plan_needs_its_models_for_the_identity_threshold() -> None:
    from types import SimpleNamespace

    plan = plan_run("deidentify", PipelineConfig())
    with pytest.raises(ConfigError, match="bind"):
        _ = plan.threshold
    assert plan.bind(SimpleNamespace(match_threshold=0.6)).threshold == 0.6  # type: ignore[arg-type]


def test_output_names_sit_beside_the_whole_output_name(tmp_path: Path) -> None:
    names = OutputNames.of(tmp_path / "o.mkv")
    assert names.report.name == "o.mkv.report.json" and names.audit.name == "o.mkv.audit.json"
    assert names.config.name == "o.mkv.config.yaml" and names.preview.name == "o.mkv.preview.png"


def test_a_cli_run_decodes_the_identity_photo_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reenact.cli import main

    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    clip, out = cut_clip(CLIP, tmp_path / "clip.mp4", 4), tmp_path / "out.mp4"
    assert main([str(clip), "--identity", str(PHOTO), "-o", str(out), "--quiet"]) == 0
    assert out.exists()
    assert opened.count(str(PHOTO)) == 1, opened


def test_one_detection_schedule() -> None:
    both = replace(PipelineConfig(), {"tracker.detect_every": 3, "tracker.max_gap": 5, "detector.full_every": 2})
    with pytest.raises(ConfigError, match="two detection schedules"):
        plan_run("reenact", both, identity=PHOTO)
    tracker = plan_run("reenact", replace(both, {"detector.full_every": None}), identity=PHOTO)
    assert tracker.tracker_detects and tracker.detection.full_every == 1, "no cadence when the tracker detects"
    assert not plan_run("reenact", PipelineConfig(), identity=PHOTO).tracker_detects


def test_an_untrained_pack_deidentifies_with_the_face_shaped_blur_unless_asked() -> None:
    auto = plan_run("deidentify", PipelineConfig())  # the tiny pack: untrained
    assert (auto.method, auto.policy) == ("blur", "classic") and not auto.synthetic
    assert len(auto.warnings) == 1 and "--method synthetic" in auto.warnings[0] and "untrained" in auto.warnings[0]
    asked = plan_run("deidentify", replace(PipelineConfig(), {"deidentify.method": "synthetic"}))
    assert (asked.method, asked.policy) == ("synthetic", "synthetic") and not asked.warnings
    assert plan_run("reenact", PipelineConfig(), identity=PHOTO).method == "synthetic"
