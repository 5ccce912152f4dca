"""``ryng-async callbacks serve|export``: receive Ryng's callbacks durably, and export them.

``serve`` runs the receiver of `ryng_async.callbacks` with an SQLite store and prints the
URL to give Ryng as the load's callback URLs; every callback is stored before Ryng gets
its 200, and a resend is stored once. ``export`` writes a store's callbacks as CSV or JSON
Lines, safely while a receiver runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import ConfigurationError
from ..callbacks import DEFAULT_MAX_BODY, DEFAULT_STORE_PATH, export, serve
from ._common import Commands, ExitCode, plain, positive_int, run_async, say

__all__ = ["add_parser"]


def add_parser(commands: Commands) -> None:
    """Add ``callbacks serve`` and ``callbacks export`` to the command line."""
    parser = commands.add_parser(
        "callbacks", help="receive and export Ryng's connect and terminal callbacks"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve_parser = actions.add_parser(
        "serve", help="run the callback receiver", description=plain(__doc__)
    )
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve_parser.add_argument(
        "--store",
        type=Path,
        default=Path(DEFAULT_STORE_PATH),
        metavar="PATH",
        help=f"the SQLite store (made if missing; default: {DEFAULT_STORE_PATH})",
    )
    serve_parser.add_argument(
        "--secret",
        default=None,
        help="a shared secret (16+ URL-safe characters) that Ryng's URL must carry; also "
        "from RYNG_CALLBACK_SECRET, which keeps it out of the process list",
    )
    serve_parser.add_argument(
        "--max-body",
        type=positive_int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="the largest callback body accepted (413 beyond)",
    )
    serve_parser.set_defaults(run=run_serve)

    export_parser = actions.add_parser(
        "export", help="write a store's callbacks as CSV or JSON Lines", description=plain(__doc__)
    )
    export_parser.add_argument("--store", type=Path, required=True, metavar="PATH")
    export_parser.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    export_parser.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="a file (default: stdout)"
    )
    export_parser.set_defaults(run=run_export)


def run_serve(args: argparse.Namespace) -> int:
    """Run ``callbacks serve`` until interrupted; return the exit code."""
    secret = args.secret or os.environ.get("RYNG_CALLBACK_SECRET") or None

    def ready(url: str) -> None:
        shown = url if secret is None else url.replace(secret, "<secret>")
        say(f"Give Ryng: {shown}", sys.stdout)
        say(f"storing callbacks in {args.store}; Ctrl-C stops", sys.stdout)

    async def main() -> int:
        await serve(
            host=args.host,
            port=args.port,
            store_path=args.store,
            secret=secret,
            max_body=args.max_body,
            on_ready=ready,
        )
        return ExitCode.OK  # pragma: no cover - serve runs until cancelled

    try:
        code = run_async(main)
    except (ConfigurationError, OSError) as exc:
        say(f"ryng-async callbacks serve: error: {exc}")
        return ExitCode.USAGE
    return ExitCode.OK if code == ExitCode.INTERRUPTED else code


def run_export(args: argparse.Namespace) -> int:
    """Run ``callbacks export``; return the exit code."""
    if not args.store.is_file():
        say(f"ryng-async callbacks export: error: no such store: {str(args.store)!r}")
        return ExitCode.USAGE

    async def main() -> int:
        if args.out is None:
            count = await export(args.store, sys.stdout.buffer, format=args.format)
            sys.stdout.buffer.flush()
        else:
            with args.out.open("wb") as out:
                count = await export(args.store, out, format=args.format)
        say(f"exported {count:,} callbacks")
        return ExitCode.OK

    try:
        return run_async(main)
    except (ConfigurationError, OSError) as exc:
        say(f"ryng-async callbacks export: error: {exc}")
        return ExitCode.USAGE
