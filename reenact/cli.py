"""Command-line entry points: the one place that turns errors into exit codes.

``reenact VIDEO --identity FACE`` is the main command; ``reenact <subcommand> ...`` runs
the tools listed in :data:`SUBCOMMANDS`. Each subcommand is a pair of functions: one
adds its arguments to an ``argparse`` parser, one runs it and returns an exit status.
Library errors (:class:`reenact.errors.ReenactError`) become one clear line on stderr and
the error's ``exit_code``; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from reenact import __version__
from reenact.errors import ReenactError

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

#: name -> (help, add_arguments, run). Subcommands register themselves below.
SUBCOMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO,
        format="%(levelname)s: %(message)s",
    )


def _run_guarded(run: Run, args: argparse.Namespace) -> int:
    try:
        return run(args)
    except ReenactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing partial was written", file=sys.stderr)
        return 130


def _subcommand_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reenact", description="reenact tools")
    parser.add_argument("--version", action="version", version=f"reenact {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _run) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        sub_parser.add_argument("--quiet", action="store_true", help="only print errors")
        add_args(sub_parser)
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    return _run_guarded(SUBCOMMANDS[args.command][2], args)


def main(argv: Sequence[str] | None = None) -> int:
    """``reenact``: dispatch to a subcommand (``reenact models list``) or the video command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _subcommand_main(args)
    if args and args[0] in ("--version",):
        print(f"reenact {__version__}")
        return 0
    return _subcommand_main(args)


# --- subcommands ---------------------------------------------------------------------------
# Each engineer adds the registration of their subcommand below (additive edits only).
