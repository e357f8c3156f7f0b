"""Fixtures of the io tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from io_media import write_video


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video("name.mp4", **write_video_kwargs)`` -> path inside tmp_path."""

    def make(name: str, **kwargs: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, **kwargs)

    return make
