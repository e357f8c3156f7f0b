"""Training configs: the shipped files load, bad keys and types are rejected by name, the
authors' flags override the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from reenact.cli import build_parser
from reenact.cli.train import _config
from reenact.errors import ConfigError
from reenact.train.config import TrainConfig, load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_load() -> None:
    tiny = load_train_config(CONFIGS / "train_tiny.yaml")
    assert tiny.attribute_encoder.backbone == "small" and tiny.generator.path is None
    full = load_train_config(CONFIGS / "train_ffhq256.yaml")
    assert full.attribute_encoder.backbone == "inception_v3" and full.attribute_encoder.out_dim == 2048
    assert full.mapper.hidden == (2048, 1024, 512) and full.mapper.w_dim == 512
    assert full.mapper.in_dim == 2560 and full.face_models.identity.mean == 127.5
    assert full.optim.lr == 5e-5 and full.optim.cross_frequency == 3 and full.loss.r1_gamma == 10.0
    assert full.loss.landmarks == 0.001 and full.loss.pixel == 0.02 and full.dataset.num_images == 70000


def test_unknown_key_and_wrong_type_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.001\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(bad)
    bad.write_text("run:\n  batch_size: eight\n")
    with pytest.raises(ConfigError, match="run.batch_size"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="attr_dim"):
        load_train_config(None, {"mapper.attr_dim": 100})


def test_authors_flags_override_config() -> None:
    args = build_parser("reenact-train").parse_args([
        "fit", "--config", str(CONFIGS / "train_tiny.yaml"), "--batch_size", "3", "--cross_frequency", "5",
        "--dataset_path", "/data/ds", "--results_dir", "/out", "--train_data_size", "100",
        "--load_checkpoint", "/out/last.safetensors", "--resolution", "64", "--set", "optim.lr=0.01",
    ])
    config: TrainConfig = _config(args, "fit")
    assert config.run.batch_size == 3 and config.optim.cross_frequency == 5
    assert config.dataset.path == "/data/ds" and config.run.results_dir == "/out"
    assert config.run.train_data_size == 100 and config.run.resume == "/out/last.safetensors"
    assert config.generator.resolution == 64 and config.optim.lr == 0.01
    args = build_parser("reenact-train").parse_args(["make-dataset", "--num_images", "10", "--output_path", "/ds",
                                 "--pretrained_models_path", "/g", "--batch_size", "4"])
    config = _config(args, "make-dataset")
    assert config.dataset.num_images == 10 and config.dataset.path == "/ds"
    assert config.generator.path == "/g" and config.dataset.batch_size == 4
    with pytest.raises(ConfigError, match="unknown key optim.nope"):
        _config(build_parser("reenact-train").parse_args(["fit", "--set", "optim.nope=1"]), "fit")
