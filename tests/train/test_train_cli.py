"""``reenact-train`` end to end: make-dataset, fit, export; bad input becomes one line and an exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reenact.cli import train_main as main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "train_tiny.yaml")


def _sets(settings: dict[str, Any]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_make_dataset_fit_export(tiny_settings: Callable[..., dict[str, Any]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    settings = tiny_settings(tmp_path / "run", **{"run.steps": 2, "run.eval_every": 100, "run.checkpoint_every": 100})
    settings.pop("dataset.path")
    common = ["--config", TINY, "--quiet", *_sets(settings)]
    assert main(["make-dataset", *common, "--output_path", str(tmp_path / "ds"), "--num_images", "8"]) == 0
    assert main(["fit", *common, "--dataset_path", str(tmp_path / "ds"), "--set", "run.eval_size=2"]) == 0
    assert (tmp_path / "run" / "last.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "last.safetensors"), "--out", str(tmp_path / "pack")]) == 0
    from reenact.models.mapper import load_identity_model

    _, mapper, config = load_identity_model(tmp_path / "pack")
    assert config.step == 2 and mapper.config.w_dim == 64
    # a damaged dataset: one line naming the shard, TrainingError's exit code
    (tmp_path / "ds" / "shard_00000.safetensors").unlink()
    capsys.readouterr()
    assert main(["fit", *common, "--dataset_path", str(tmp_path / "ds"), "--set", "run.eval_size=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard_00000.safetensors is missing" in err[0]


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  stepz: 3\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert "stepz" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
