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

``reenact-train`` (:mod:`~reenact.cli.train`) is a console script of its own, registered in
the same table.

Library errors (:class:`reenact.errors.ReenactError`) become one clear line on stderr and
the error's ``exit_code`` in :func:`reenact.exits.run_guarded`, the one guard every command
runs in (``python -m reenact.app`` too); Ctrl-C exits with 130, SIGTERM with 143 and SIGHUP
with 129 after the same clean-up; bad flags exit with argparse's 2. Any other exception is a
bug: one line naming it, exit 1, no traceback (``REENACT_TRACEBACK=1`` shows it).
``docs/exit-statuses.md`` lists them all.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

from reenact import __version__
from reenact.allocator import limit_heap_growth
from reenact.app import cli as app_cmd
from reenact.cli import eval as eval_cmd
from reenact.cli import image_tools, models, video
from reenact.cli import train as train_cmd
from reenact.exits import NOTHING_PARTIAL, Stopped, exit_now, run_guarded, run_script, stop_signals

__all__ = ["COMMANDS", "Command", "Stopped", "build_parser", "deidentify_main", "deidentify_script", "exit_now",
           "main", "reenact_script", "run_guarded", "stop_signals", "train_main", "train_script"]


class Command(NamedTuple):
    """One command: its help line, what adds its arguments, what runs it (-> exit status)."""

    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: True: ``reenact NAME ...``; False: its own console script (the video commands, training)
    subcommand: bool = True
    #: what a stopped or interrupted run says it leaves behind (:func:`reenact.exits.run_guarded`)
    left: str = NOTHING_PARTIAL
    #: False when the command's own subcommands add --quiet (a console script's top level only)
    top_quiet: bool = True
    #: fix the allocator's mmap threshold (:func:`reenact.allocator.limit_heap_growth`), measured
    #: for video runs; training keeps the C library's default
    limit_heap: bool = True


#: Every command of the CLI. ``reenact``, ``deidentify`` and ``reenact-train`` are console
#: scripts (setup.cfg); the others are ``reenact <name>`` subcommands.
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
    "reenact-train": Command(train_cmd.HELP, train_cmd.add_args, train_cmd.run, subcommand=False,
                             left=train_cmd.LEFT, top_quiet=False, limit_heap=False),
}

SUBCOMMANDS = [name for name, command in COMMANDS.items() if command.subcommand]


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
    if command.top_quiet:
        parser.add_argument("--quiet", action="store_true", help="only print errors")
    command.add_args(parser)
    return parser


def _dispatch(name: str, argv: list[str]) -> int:
    args = build_parser(name).parse_args(argv)
    subcommand = COMMANDS[name].subcommand
    command = COMMANDS[args.command] if subcommand else COMMANDS[name]
    quiet = args.quiet or getattr(args, "json", False)  # the video commands' --json is quiet too
    logging.basicConfig(level=logging.ERROR if quiet else logging.INFO, format="%(levelname)s: %(message)s")
    if command.limit_heap:
        limit_heap_growth()  # before any large buffer: a lower peak resident size (reenact.allocator)
    return run_guarded(command.run, args, command.left)


def main(argv: Sequence[str] | None = None) -> int:
    """``reenact``: dispatch to a subcommand (``reenact models list``) or the video command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _dispatch(args[0], args)
    return _dispatch("reenact", args)


def deidentify_main(argv: Sequence[str] | None = None) -> int:
    """``deidentify VIDEO``: synthetic, consistent identities for everyone in a video."""
    return _dispatch("deidentify", list(sys.argv[1:] if argv is None else argv))


def train_main(argv: Sequence[str] | None = None) -> int:
    """``reenact-train make-dataset|fit|export``: the training command line."""
    return _dispatch("reenact-train", list(sys.argv[1:] if argv is None else argv))


def reenact_script() -> NoReturn:
    """The ``reenact`` console script: :func:`main`, then :func:`exit_now`."""
    run_script(main)


def deidentify_script() -> NoReturn:
    """The ``deidentify`` console script: :func:`deidentify_main`, then :func:`exit_now`."""
    run_script(deidentify_main)


def train_script() -> NoReturn:
    """The ``reenact-train`` console script (also ``torchrun --no-python reenact-train ...``)."""
    run_script(train_main)
