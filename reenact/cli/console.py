"""The console during a run: log lines never inside a progress bar, each warning once, after it.

While :func:`held_warnings` is active, the root logger's handlers are set aside: warnings
(and worse) are kept, in order and without repeats, for the run's summary to print after the
bar has closed; other log lines go through ``tqdm.write`` so they never break a bar's line.
If the block raises, the kept warnings are printed on the way out (stderr), so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["held_warnings"]


class _Holder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not end the run
            message = str(record.msg)
        if record.levelno >= logging.WARNING:
            if message not in self.warnings:
                self.warnings.append(message)
            return
        from tqdm import tqdm

        tqdm.write(f"{record.levelname}: {message}", file=sys.stderr)


@contextlib.contextmanager
def held_warnings() -> Iterator[list[str]]:
    """Keep the run's warnings (yielded list, filled as they come) instead of printing them."""
    root = logging.getLogger()
    saved = root.handlers[:]
    holder = _Holder()
    holder.setLevel(min((h.level for h in saved), default=logging.WARNING))
    root.handlers = [holder]
    ok = False
    try:
        yield holder.warnings
        ok = True
    finally:
        root.handlers = saved
        if not ok:
            for message in holder.warnings:
                print(f"warning: {message}", file=sys.stderr)
