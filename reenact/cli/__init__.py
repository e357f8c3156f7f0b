"""Command-line entry points: one table of commands, one place that turns errors into exit codes.

``reenact VIDEO --identity FACE`` and ``deidentify VIDEO`` run the pipeline
(:mod:`reenact.cli.video`); ``reenact <subcommand> ...`` runs the tools in :data:`COMMANDS`
(one module each: :mod:`~reenact.cli.eval`, :mod:`~reenact.cli.models`,
:mod:`~reenact.cli.image_tools`). Settings are resolved in one step,
:func:`reenact.cli.settings.resolve_settings`.

Imports: every CLI module imports only light modules at its top (the standard library,
``reenact.errors``, ``reenact.config``), so parsing the command line and refusing bad
flags never loads torch. Modules that pull in torch or the models (``reenact.pipeline``,
``reenact.models``, ``reenact.evaluate``, ...) are imported inside the ``run`` functions,
after parsing. ``tests/cli/test_cli_table.py`` checks that parsing leaves torch unloaded.

Library errors (:class:`reenact.errors.ReenactError`) become one clear line on stderr and
the error's ``exit_code`` (:func:`run_guarded`, the only place); Ctrl-C exits with 130,
SIGTERM with 143 and SIGHUP with 129 after the same clean-up (:func:`stop_signals` turns
them into :class:`Stopped`, a KeyboardInterrupt, which the writer already cleans up on);
bad flags exit with argparse's 2. Any other exception is a bug: one line naming it, exit 1,
no traceback (``REENACT_TRACEBACK=1`` shows it). ``docs/exit-statuses.md`` lists them all.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, NoReturn

from reenact import __version__
from reenact.allocator import limit_heap_growth
from reenact.app import cli as app_cmd
from reenact.cli import eval as eval_cmd
from reenact.cli import image_tools, models, video
from reenact.errors import InputError, ReenactError, printable
from reenact.threads import ENV_THREADS, ThreadBudget

__all__ = ["COMMANDS", "Command", "Stopped", "build_parser", "deidentify_main", "deidentify_script", "exit_now",
           "main", "reenact_script", "run_guarded", "stop_signals"]


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


class Command(NamedTuple):
    """One command: its help line, what adds its arguments, what runs it (-> exit status)."""

    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: True: ``reenact NAME ...``; False: its own console script (the video commands)
    subcommand: bool = True


#: Every command of the CLI. ``reenact`` and ``deidentify`` are console scripts
#: (setup.cfg); the others are ``reenact <name>`` subcommands.
COMMANDS: dict[str, Command] = {
    "reenact": Command(video.DESCRIPTION["reenact"], lambda p: video.add_args(p, "reenact"),
                       lambda a: video.run(a, "reenact"), subcommand=False),
    "deidentify": Command(video.DESCRIPTION["deidentify"], lambda p: video.add_args(p, "deidentify"),
                          lambda a: video.run(a, "deidentify"), subcommand=False),
    "eval": Command(eval_cmd.HELP, eval_cmd.add_args, eval_cmd.run),
    "models": Command(models.HELP, models.add_args, models.run),
    "grid": Command(image_tools.GRID_HELP, image_tools.grid_add_args, image_tools.grid_run),
    "interpolate": Command(image_tools.INTERPOLATE_HELP, image_tools.interpolate_add_args,
                           image_tools.interpolate_run),
    "app": Command("the local web app: preview, run and download in a browser (needs the app extra)",
                   app_cmd.add_args, app_cmd.run),
}

SUBCOMMANDS = [name for name, command in COMMANDS.items() if command.subcommand]


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; the one place that turns errors into exit statuses and one stderr line."""
    try:
        with stop_signals():
            return run(args)
    except ReenactError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:
        print(f"stopped by {signal.Signals(exc.signum).name}: nothing partial was written", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted: nothing partial was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `reenact ... --dry-run | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one line and a status, never a traceback
        if os.environ.get("REENACT_TRACEBACK"):
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); please report it "
              "(REENACT_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``reenact`` (video command), ``deidentify``, or ``reenact <subcommand>``."""
    command = COMMANDS[name]
    if command.subcommand:
        parser = argparse.ArgumentParser(prog="reenact", description="reenact tools", allow_abbrev=False)
        parser.add_argument("--version", action="version", version=f"reenact {__version__}")
        sub = parser.add_subparsers(dest="command", required=True)
        for sub_name in SUBCOMMANDS:
            sub_parser = sub.add_parser(sub_name, help=COMMANDS[sub_name].help, allow_abbrev=False)
            sub_parser.add_argument("--quiet", action="store_true", help="only print errors")
            COMMANDS[sub_name].add_args(sub_parser)
        return parser
    epilog = f"other tools: reenact {{{','.join(SUBCOMMANDS)}}} --help" if name == "reenact" else None
    parser = argparse.ArgumentParser(prog=name, description=command.help, epilog=epilog, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"reenact {__version__}")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    command.add_args(parser)
    return parser


def _dispatch(name: str, argv: list[str]) -> int:
    args = build_parser(name).parse_args(argv)
    subcommand = COMMANDS[name].subcommand
    command = COMMANDS[args.command] if subcommand else COMMANDS[name]
    quiet = args.quiet or (not subcommand and args.json)  # the video commands' --json is quiet too
    logging.basicConfig(level=logging.ERROR if quiet else logging.INFO, format="%(levelname)s: %(message)s")
    limit_heap_growth()  # before any large buffer: a lower peak resident size (reenact.allocator)
    return run_guarded(lambda a: _budgeted(command.run, a), args)


def _budgeted(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Decide this process's thread budget before torch loads (reenact.threads), then run.
    ``--threads N`` is REENACT_THREADS for this process and the workers it starts."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be at least 1, got {threads}")
        os.environ[ENV_THREADS] = str(threads)
    ThreadBudget.for_process(1).apply()
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``reenact``: dispatch to a subcommand (``reenact models list``) or the video command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _dispatch(args[0], args)
    return _dispatch("reenact", args)


def deidentify_main(argv: Sequence[str] | None = None) -> int:
    """``deidentify VIDEO``: synthetic, consistent identities for everyone in a video."""
    return _dispatch("deidentify", list(sys.argv[1:] if argv is None else argv))


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


def _script(entry: Callable[[], int]) -> NoReturn:
    try:
        status: int | str | None = entry()
    except SystemExit as stop:  # argparse's --help, --version and bad flags
        status = stop.code
    exit_now(status)


def reenact_script() -> NoReturn:
    """The ``reenact`` console script: :func:`main`, then :func:`exit_now`."""
    _script(main)


def deidentify_script() -> NoReturn:
    """The ``deidentify`` console script: :func:`deidentify_main`, then :func:`exit_now`."""
    _script(deidentify_main)
