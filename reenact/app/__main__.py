"""``python -m reenact.app``: the ``reenact app`` subcommand on its own."""

from __future__ import annotations

import argparse
import logging
import sys

from reenact.app.cli import add_args, run
from reenact.errors import ReenactError
from reenact.threads import ThreadBudget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reenact.app", description="reenact's local web app")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    add_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        ThreadBudget.for_process(1).apply()  # the app's one worker thread runs one job at a time
        return run(args)
    except ReenactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
