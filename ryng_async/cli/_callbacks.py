"""``ryng-async callbacks serve|export``: receive Ryng's callbacks durably, and export them.

``serve`` runs the receiver of `ryng_async.callbacks` with an SQLite store and prints the
URL to give Ryng as the load's callback URLs; every callback is stored before Ryng gets
its 200, and a resend is stored once. It logs to stderr (an access log with the secret
redacted, and every 500 with its cause). ``export`` writes a store's callbacks as CSV or
JSON Lines, safely while a receiver runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .. import ConfigurationError, ResourceError
from ..callbacks import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_STORE_PATH,
    export,
    serve,
)
from ._common import Commands, ExitCode, plain, positive_float, positive_int, run_async, say

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
    secrets = serve_parser.add_mutually_exclusive_group()
    secrets.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="a file holding the shared secret (16+ URL-safe characters) that Ryng's URL "
        "must carry; or set RYNG_CALLBACK_SECRET",
    )
    secrets.add_argument(
        "--secret",
        default=None,
        help="the secret itself (shows in the process list: prefer --secret-file or "
        "RYNG_CALLBACK_SECRET)",
    )
    serve_parser.add_argument(
        "--show-url",
        action="store_true",
        help="print the URL to give Ryng with its secret, on a terminal only (never logged)",
    )
    serve_parser.add_argument(
        "--max-body",
        type=positive_int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="the largest callback body accepted (413 beyond)",
    )
    serve_parser.add_argument(
        "--header-timeout",
        type=positive_float,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends no complete request headers within this",
    )
    serve_parser.add_argument(
        "--body-timeout",
        type=positive_float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="answer 408 to a request whose body takes longer than this",
    )
    serve_parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=None,
        metavar="N",
        help="the most connections open at once, the oldest idle closed first "
        "(default: the descriptor limit less 64)",
    )
    serve_parser.add_argument(
        "--log-format", choices=["plain", "json"], default="plain", help="log lines on stderr"
    )
    serve_parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log each request (errors are logged still)",
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


class _JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


@contextmanager
def _logging_to_stderr(log_format: str, *, access_log: bool) -> Iterator[None]:
    """Log INFO and above to stderr, plain or as JSON lines, while the block runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JSONFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    saved = root.level, access.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        access.setLevel(saved[1])


def _read_secret(args: argparse.Namespace) -> str | None:
    if args.secret_file is not None:
        try:
            text: str = args.secret_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            where = str(args.secret_file)
            raise ConfigurationError(f"cannot read --secret-file {where!r}: {exc}") from exc
        secret = text.strip()
        if not secret:
            raise ConfigurationError(f"--secret-file {str(args.secret_file)!r} is empty")
        return secret
    given: object = args.secret
    if isinstance(given, str) and given:
        return given
    return os.environ.get("RYNG_CALLBACK_SECRET") or None


def run_serve(args: argparse.Namespace) -> int:
    """Run ``callbacks serve`` until interrupted; return the exit code."""
    try:
        secret = _read_secret(args)
    except ConfigurationError as exc:
        say(f"ryng-async callbacks serve: error: {exc}")
        return ExitCode.USAGE

    def ready(url: str) -> None:
        shown = url if secret is None else url.replace(secret, "<secret>")
        say(f"Give Ryng: {shown}", sys.stdout)
        if args.show_url and secret is not None:
            if sys.stdout.isatty():
                say(f"  that is: {url}", sys.stdout)
            else:
                say("--show-url: the URL with its secret is shown on a terminal only")
        say(f"storing callbacks in {args.store}; Ctrl-C stops", sys.stdout)

    async def main() -> int:
        await serve(
            host=args.host,
            port=args.port,
            store_path=args.store,
            secret=secret,
            max_body=args.max_body,
            on_ready=ready,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        )
        return ExitCode.OK  # pragma: no cover - serve runs until cancelled

    try:
        with _logging_to_stderr(args.log_format, access_log=args.access_log):
            code = run_async(main)
    except ResourceError as exc:  # no room for the store: the settings were right
        say(f"ryng-async callbacks serve: error: {exc}")
        return ExitCode.RESOURCE
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
