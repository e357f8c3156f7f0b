"""The commands' behaviour on bad input: one clear line, a non-zero status, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reenact.cli import deidentify_main, main

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "samples" / "astronaut_clip.mp4"


def test_missing_full_weights_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    status = deidentify_main([str(CLIP), "-o", str(tmp_path / "o.mp4"), "--pack", "full", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert "insightface" in err[0] or "reenact models pull" in err[0]
    assert not (tmp_path / "o.mp4").exists()


def test_existing_output_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.mp4"
    out.write_bytes(b"keep me")
    assert deidentify_main([str(CLIP), "-o", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_input_as_output_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    before = CLIP.read_bytes()
    assert deidentify_main([str(CLIP), "-o", str(CLIP), "--overwrite", "--quiet"]) == 2
    assert "input" in capsys.readouterr().err
    assert CLIP.read_bytes() == before


def test_missing_video_and_unknown_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.mp4"), "--identity", str(ROOT / "samples" / "astronaut_identity.jpg")]) == 2
    assert "nope.mp4" in capsys.readouterr().err
    assert deidentify_main([str(CLIP), "--set", "blend.colour=1", "--dry-run"]) == 2
    assert "blend.colour" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert deidentify_main([str(CLIP), "--seed", "7", "--smooth", "gaussian", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["mode"] == "deidentify" and plan["config"]["seed"] == 7
    assert plan["config"]["smoothing"]["latent"]["method"] == "gaussian"
    assert plan["output"].endswith("astronaut_clip_deidentified.mp4")


def test_identity_model_needs_its_normalisation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = deidentify_main([str(CLIP), "-o", str(tmp_path / "o.mp4"), "--identity-model", "some.onnx", "--quiet"])
    assert status == 2 and "--identity-mean" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_dry_run_checks_the_inputs_it_can(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CLIP), "--identity", str(tmp_path / "nope.jpg"), "--dry-run"]) == 2
    assert "identity photo" in capsys.readouterr().err
    assert deidentify_main([str(CLIP), "--faces", f"reference:{tmp_path / 'who.jpg'}", "--dry-run"]) == 2
    assert "reference photo" in capsys.readouterr().err
    assert deidentify_main([str(CLIP), "--pack", "nosuch", "--dry-run"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert deidentify_main([str(CLIP), "--set", "blend.feather=[1", "--dry-run"]) == 2
    assert "not a valid YAML value" in capsys.readouterr().err
    assert deidentify_main([str(CLIP), "--smooth", "gaussian", "--no-smooth", "--dry-run"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_optimize_config_file_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config configs/optimize.yaml` is a pipeline config: it reaches the optimiser's input check."""
    status = main([str(CLIP), "--identity", str(ROOT / "samples" / "astronaut_identity.jpg"),
                   "--config", str(ROOT / "configs" / "optimize.yaml"), "-o", str(tmp_path / "o.mp4"), "--dry-run"])
    err = capsys.readouterr().err
    assert "unknown key" not in err
    assert status == 2 and "--mapper optimize needs" in err  # the tiny pack has no differentiable identity model


def test_folder_input_with_a_file_as_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(CLIP.read_bytes())
    target = tmp_path / "exists.mp4"
    target.write_bytes(b"keep")
    assert deidentify_main([str(folder), "-o", str(target), "--quiet"]) == 2
    assert "needs an output folder" in capsys.readouterr().err
    assert target.read_bytes() == b"keep"
