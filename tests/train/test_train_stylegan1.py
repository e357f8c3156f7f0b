"""Training against StyleGAN v1 (the paper's setting): ``generator.kind: stylegan1``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG, tiny_overrides

from reenact.errors import ConfigError
from reenact.models.stylegan1 import Generator as V1Generator
from reenact.models.stylegan1 import tiny_stylegan1
from reenact.train.config import load_train_config
from reenact.train.dataset import make_dataset
from reenact.train.trainer import Trainer, build_generator


def test_trainer_builds_a_stylegan1_generator_and_runs_steps(fixtures: Path, tmp_path: Path) -> None:
    overrides = {"generator.kind": "stylegan1", "run.steps": 3, "run.eval_every": 100,
                 "run.checkpoint_every": 100, "run.train_data_size": 4}
    config = load_train_config(TINY_CONFIG, tiny_overrides(fixtures, tmp_path / "data", tmp_path / "results",
                                                           **overrides))
    G = build_generator(config.generator)
    assert isinstance(G, V1Generator) and G.img_resolution == 32 and G.has_mapping
    make_dataset(G, config.dataset, generator_name="tiny-stylegan1", progress=False)
    trainer = Trainer(config)
    assert isinstance(trainer.G, V1Generator)
    before = [p.detach().clone() for p in trainer.mapper.parameters()]
    history = trainer.fit()
    assert [r.step for r in history] == [0, 1, 2]
    assert all(math.isfinite(r.loss) for r in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.mapper.parameters(), strict=True))


def test_stylegan1_file_without_mapping_is_refused(fixtures: Path, tmp_path: Path) -> None:
    from reenact.models.stylegan1 import Generator, save_stylegan1

    path = save_stylegan1(Generator(tiny_stylegan1(0, 32).synthesis), tmp_path / "syn.safetensors")
    config = load_train_config(TINY_CONFIG, tiny_overrides(
        fixtures, tmp_path, tmp_path, **{"generator.kind": "stylegan1", "generator.path": str(path)}))
    with pytest.raises(ConfigError, match="mapping network"):
        build_generator(config.generator)


def test_unknown_generator_kind_is_refused(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generator.kind"):
        load_train_config(TINY_CONFIG, tiny_overrides(fixtures, tmp_path, tmp_path, **{"generator.kind": "v3"}))
