"""``reenact app``: argument parsing and start-up of the local web app.

``add_args(parser)`` and ``run(args) -> int`` are the subcommand pair the CLI registers;
``python -m reenact.app`` runs the same with the CLI's error handling.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from reenact.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; others print a warning)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--allow", action="append", type=Path, default=[], metavar="DIR",
                   help="folder whose videos and photos the page may use by path (repeatable; default: none)")
    p.add_argument("--max-upload", default="2G", metavar="SIZE", help="largest upload, e.g. 500M or 2G (default 2G)")
    p.add_argument("--max-waiting", type=int, default=4, help="runs that may wait in the queue (default 4)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace) -> object:
    """The :class:`~reenact.app.server.AppSettings` the arguments describe (checked)."""
    from reenact.app.safety import allowed_roots, parse_size
    from reenact.app.server import AppSettings

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0..65535)")
    if args.max_waiting < 0:
        raise ConfigError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    hosts = AppSettings().hosts if is_loopback(args.host) else ("*",)
    return AppSettings(allow=allowed_roots(args.allow), max_upload=parse_size(args.max_upload),
                       device=args.device, max_waiting=args.max_waiting, hosts=hosts)


def run(args: argparse.Namespace) -> int:
    """Serve the app until Ctrl-C; the private upload folder is removed on the way out."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("the web app needs its extra: pip install 'reenact[app]'") from exc
    from reenact.app.server import create_app
    from reenact.threads import current as thread_budget

    thread_budget().apply()  # the process's budget (applied at start) again, now that torch may be loaded
    settings = settings_from_args(args)
    if not is_loopback(args.host):
        print(f"WARNING: serving on {args.host}: anyone who can reach this machine on port {args.port} can "
              "upload videos and run the pipeline; there is no login. Use --host 127.0.0.1 unless you mean it.",
              file=sys.stderr)
    app = create_app(settings)  # type: ignore[arg-type]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    if not getattr(args, "quiet", False):
        print(f"reenact app on http://{shown}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
