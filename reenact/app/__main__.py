"""``python -m reenact.app``: the ``reenact app`` subcommand on its own, in the same error guard."""

from __future__ import annotations

import argparse
import logging
import sys

from reenact.app.cli import add_args, run
from reenact.exits import run_guarded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reenact.app", description="reenact's local web app")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    add_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    return run_guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
