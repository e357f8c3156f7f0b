"""(in progress)"""
from __future__ import annotations


def unavailable_reason() -> str | None:
    try:
        import cupy  # noqa: F401
    except Exception as exc:
        return f"cannot import cupy: {exc}"
    return None
