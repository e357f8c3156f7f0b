"""Shared pytest fixtures: where the real test material lives, and GPU/fixture skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testing.fixtures import fixtures_dir, reference_dir


def _require_fixtures() -> bool:
    return os.environ.get("REENACT_REQUIRE_FIXTURES") == "1"


def _missing(what: str) -> None:
    message = (
        f"{what} not found: set REENACT_FIXTURES or place ../shared next to the repository"
    )
    if _require_fixtures():
        pytest.fail(message + " (REENACT_REQUIRE_FIXTURES=1, so this is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """The shared fixtures folder (videos/, images/, models/, identities.tsv)."""
    found = fixtures_dir()
    if found is None:
        _missing("shared fixtures")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def reference() -> Path:
    """The shared reference folder (stylegan2/ parameter names and test vectors)."""
    found = reference_dir()
    if found is None:
        _missing("shared reference vectors")
    assert found is not None
    return found


#: files of shared/reference/paper the paper tests read (the authors' checkpoints and TF2 outputs)
PAPER_FILES = ("vectors.npz", "stylegan_G_256x256_synthesis.index", "stylegan_G_32x32_synthesis.index")


@pytest.fixture(scope="session")
def paper_reference(reference: Path) -> Path:
    """``shared/reference/paper``: skipped when absent, a failure under REENACT_REQUIRE_FIXTURES=1."""
    folder = reference / "paper"
    missing = [name for name in PAPER_FILES if not (folder / name).is_file()]
    if missing:
        _missing(f"paper reference files {missing} in {folder}")
    return folder


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch always installed
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.sh on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
