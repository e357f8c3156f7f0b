"""Locating the shared test fixtures (real videos, photos and small models).

The fixtures are third-party, test-only material that is never part of the package; they
are found at run time through ``REENACT_FIXTURES`` or ``../shared/fixtures`` next to the
repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent  # testing/ sits at the repository root

CLIPS = {
    "d0": "liveportrait_d0.mp4",
    "d12": "liveportrait_d12.mp4",
    "katie": "sadtalker_WDA_KatieHill_000.mp4",
    "hamilton": "face_recognition_short_hamilton_clip.mp4",
    "friends": "mobileface_friends1.mp4",
    "crowd": "facenet_pytorch_video.mp4",
}
"""The fixture videos (under ``videos/``) the benches name: three 512x512 one-face clips,
a dark 640x360 stage, a dim 720p group and a 1080p crowd of small faces."""


def fixtures_dir() -> Path | None:
    """Return the fixtures folder, or ``None`` when it cannot be found."""
    env = os.environ.get("REENACT_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(_REPO_ROOT.parent / "shared" / "fixtures")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def reference_dir() -> Path | None:
    """Return ``shared/reference`` (StyleGAN2 parameter names and test vectors), if present."""
    fixtures = fixtures_dir()
    candidates = []
    if fixtures is not None:
        candidates.append(fixtures.parent / "reference")
    candidates.append(_REPO_ROOT.parent / "shared" / "reference")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def require_extra(module: str, module_level: bool = False) -> None:
    """Skip the calling test when an optional extra is not installed, outside CI.

    In CI (``REENACT_REQUIRE_FIXTURES=1``) every extra the README installs is required, so a
    missing or broken one is a failure, never a silent skip.
    """
    import importlib

    import pytest

    try:
        importlib.import_module(module)
    except Exception as exc:
        if os.environ.get("REENACT_REQUIRE_FIXTURES") == "1":
            pytest.fail(f"{module} cannot be imported ({exc}); CI installs it, so this is a failure")
        pytest.skip(f"{module} is not installed ({exc})", allow_module_level=module_level)
