"""The one place that turns errors into exit statuses: every console script and the web app.

:func:`run_guarded` runs a command (``run(args) -> status``) and turns what it raises into
one clear line on stderr and a status: a :class:`reenact.errors.ReenactError` its
``exit_code`` (its message through :func:`reenact.errors.printable`, so a file name cannot
forge lines or clear the terminal); Ctrl-C 130, SIGTERM 143 and SIGHUP 129 after the same
clean-up (:func:`stop_signals` turns them into :class:`Stopped`, a KeyboardInterrupt, which
the writer already cleans up on); a closed output pipe 0. Any other exception is a bug: one
line naming it, status 1, no traceback (``REENACT_TRACEBACK=1`` shows it).
``docs/exit-statuses.md`` lists them all.

Only entry points import this module (:mod:`reenact.cli` and ``python -m reenact.app``);
library code raises and never exits. It imports nothing heavy, so a refused command line
never waits for torch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn

from reenact.errors import ReenactError, printable

__all__ = ["NOTHING_PARTIAL", "STOP_SIGNALS", "Stopped", "exit_now", "run_guarded", "run_script", "stop_signals"]

#: what a stopped command says it left behind, unless it says otherwise
NOTHING_PARTIAL = "nothing partial was written"


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) raised in the main thread like Ctrl-C, so every clean-up
    that runs on KeyboardInterrupt (the writer removes its temporary file) runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: signals that stop a run with the clean-up of Ctrl-C; exit status 128 + the signal number
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Stopped` in the main thread while the block runs."""
    previous = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
            previous[sig] = signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_guarded(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, left: str = NOTHING_PARTIAL
) -> int:
    """Run a command; the one place that turns errors into exit statuses and one stderr line.

    ``left``: what a stopped or interrupted command says it leaves behind (``reenact-train``:
    its last checkpoint).
    """
    try:
        with stop_signals():
            return run(args)
    except ReenactError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:
        print(f"stopped by {signal.Signals(exc.signum).name}: {left}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"interrupted: {left}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `reenact ... --dry-run | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one line and a status, never a traceback
        if os.environ.get("REENACT_TRACEBACK"):
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {printable(exc)}); please report it "
              "(REENACT_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


def exit_now(status: int | str | None) -> NoReturn:
    """End the process with ``status`` (``sys.exit``'s meaning) without the interpreter's teardown.

    Once a command has returned, everything it wrote is closed; what is left is the
    interpreter freeing every module and torch's, onnxruntime's and the CUDA libraries'
    static objects, which takes 0.8-1 s here (2 CPU cores; ``import torch`` then a normal
    exit against ``os._exit``) and produces nothing. The exit handlers still run (temporary
    folders, Ray, multiprocessing, logging) and both output streams are flushed first; while
    a thread that is not a daemon is still running, the normal exit (which waits for it) is
    taken instead. Only the console scripts call this; the ``main`` functions return.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()  # what the interpreter runs at exit, before its teardown
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)  # sys.exit("message") prints the message, status 1
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(status & 0xFF)


def run_script(entry: Callable[[], int]) -> NoReturn:
    """A console script: ``entry()`` (argparse's ``SystemExit`` included), then :func:`exit_now`."""
    try:
        status: int | str | None = entry()
    except SystemExit as stop:  # argparse's --help, --version and bad flags
        status = stop.code
    exit_now(status)
