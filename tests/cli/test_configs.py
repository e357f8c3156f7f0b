"""Every file in configs/ loads with the loader its name implies: train_*.yaml with the training
loader, every other file as ``--config`` of the pipeline commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from reenact.cli import build_parser
from reenact.cli.settings import resolve_settings
from reenact.pipeline import PipelineConfig
from reenact.train.config import TrainConfig, load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").iterdir())


def test_configs_folder_holds_only_yaml_files() -> None:
    assert CONFIGS, "configs/ is empty"
    assert all(p.is_file() and p.suffix == ".yaml" for p in CONFIGS), [p.name for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_file_loads(path: Path) -> None:
    if path.name.startswith("train_"):
        assert isinstance(load_train_config(path), TrainConfig)
        return
    for mode, extra in (("reenact", ["--identity", "face.jpg"]), ("deidentify", [])):
        args = build_parser(mode).parse_args(["clip.mp4", *extra, "--config", str(path)])
        config = resolve_settings(args)
        assert isinstance(config, PipelineConfig)
        assert config != PipelineConfig(), f"{path.name} changes no setting"
