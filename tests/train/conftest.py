"""Shared pieces of the training tests: the tiny config with the fixture ONNX models, a
small dataset sampled once per session, and the converted face networks (built once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from testing.models import MOBILEFACE, PFLD

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "train_tiny.yaml"


def tiny_overrides(fixtures: Path, dataset: Path, results: Path, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "face_models.identity.path": str(MOBILEFACE.file(fixtures)),
        "face_models.landmarks.path": str(PFLD.file(fixtures)),
        "dataset.path": str(dataset),
        "dataset.num_images": 24,
        "dataset.shard_size": 8,
        "dataset.batch_size": 8,
        "run.results_dir": str(results),
        "run.batch_size": 2,
        "run.eval_size": 4,
        "run.num_workers": 0,
        "run.num_threads": 1,
        "run.progress": False,
        "run.device": "cpu",
    }
    base.update(extra)
    return base


@pytest.fixture(scope="session")
def tiny_generator_32() -> torch.nn.Module:
    from reenact.models.stylegan2 import tiny_generator

    return tiny_generator(0, 32)


@pytest.fixture(scope="session")
def tiny_dataset(fixtures: Path, tmp_path_factory: pytest.TempPathFactory, tiny_generator_32: torch.nn.Module) -> Path:
    from reenact.train.config import load_train_config
    from reenact.train.dataset import make_dataset

    root = tmp_path_factory.mktemp("tiny_dataset")
    config = load_train_config(TINY_CONFIG, tiny_overrides(fixtures, root, root / "unused"))
    make_dataset(tiny_generator_32, config.dataset, generator_name="tiny", progress=False)
    return root


@pytest.fixture(scope="session")
def critics(fixtures: Path, tiny_dataset: Path) -> Any:
    from reenact.train.config import load_train_config
    from reenact.train.face_nets import FaceCritics

    config = load_train_config(TINY_CONFIG, tiny_overrides(fixtures, tiny_dataset, tiny_dataset / "unused"))
    return FaceCritics(config.face_models, config.generator.resolution)


@pytest.fixture(scope="session")
def make_trainer(fixtures: Path, tiny_dataset: Path, tiny_generator_32: torch.nn.Module,
                 critics: Any) -> Callable[..., Any]:
    from reenact.train.config import load_train_config
    from reenact.train.trainer import Trainer

    def make(results: Path, **overrides: Any) -> Any:
        config = load_train_config(TINY_CONFIG, tiny_overrides(fixtures, tiny_dataset, results, **overrides))
        return Trainer(config, G=tiny_generator_32, critics=critics)

    return make


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One torch thread: on the shared 2-core CI machine this is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_settings(fixtures: Path, tiny_dataset: Path) -> Callable[..., dict[str, Any]]:
    """``settings(results_dir, **overrides)``: the tiny config's overrides for these tests."""

    def settings(results: Path, **extra: Any) -> dict[str, Any]:
        return tiny_overrides(fixtures, tiny_dataset, results, **extra)

    return settings
