"""The bench goal line and the fixture-model table that tests and benches share (testing/)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from testing.goals import all_pass, goal
from testing.models import FIXTURE_MODELS, MOBILEFACE


def test_goal_line_format_and_verdict() -> None:
    assert goal("overlap", 0.8, "<=", 1.0) == "goal overlap: 0.800 (target <= 1.0) PASS"
    assert goal("speedup", 1.5, ">=", 2.0, ".2f") == "goal speedup: 1.50 (target >= 2.0) FAIL"
    assert goal("rss", 1100.4, "<=", 1024.0, ".0f", ".0f") == "goal rss: 1100 (target <= 1024) FAIL"
    assert goal("reid", -0.02, "<=", 0.0, "+.4f") == "goal reid: -0.0200 (target <= 0.0) PASS"
    assert goal("nan", math.nan, "<=", 1.0).endswith("FAIL") and goal("nan", math.nan, ">=", 1.0).endswith("FAIL")
    with pytest.raises(ValueError, match="op"):
        goal("x", 1.0, "<", 2.0)
    assert all_pass(["load 0.5", goal("a", 1, "<=", 2)]) and not all_pass([goal("a", 3, "<=", 2), goal("b", 1, "<=", 2)])


def test_every_fixture_model_is_there(fixtures: Path) -> None:
    for name, model in FIXTURE_MODELS.items():
        assert model.file(fixtures).is_file(), name
    spec = MOBILEFACE.spec(fixtures)  # raw 0..255 pixels: the trap the fixtures README warns about
    assert (spec.input_scale, spec.mean, spec.std, spec.input_size) == (255.0, 0.0, 1.0, 112)
