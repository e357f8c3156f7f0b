"""The benches' goal line, in one place.

Every bench prints its verdicts as ``goal NAME: VALUE (target OP TARGET) PASS|FAIL``, a
ratio or size measured in one run against a fixed target (never a timing assert in a test).
"""

from __future__ import annotations

from collections.abc import Iterable


def goal(name: str, value: float, op: str, target: float, fmt: str = ".3f", target_fmt: str = "") -> str:
    """``goal NAME: VALUE (target OP TARGET) PASS|FAIL``; PASS when ``value OP target`` holds.

    ``op`` is ``<=`` or ``>=``; ``fmt`` formats the value (``.3f``), ``target_fmt`` the target
    (as written by default). A NaN value fails.
    """
    if op not in ("<=", ">="):
        raise ValueError(f"goal {name}: op must be '<=' or '>=', got {op!r}")
    ok = value <= target if op == "<=" else value >= target
    return f"goal {name}: {value:{fmt}} (target {op} {target:{target_fmt}}) {'PASS' if ok else 'FAIL'}"


def all_pass(lines: Iterable[str]) -> bool:
    """Whether every goal line among ``lines`` passed (lines that are not goal lines are ignored)."""
    return all(line.endswith(" PASS") for line in lines if line.startswith("goal "))
