"""The ``ryng-async`` command line (``python -m ryng_async`` is the same).

Commands, one module each: ``demo`` (a bulk load into an in-process fake server),
``append`` (a CSV or JSON Lines file into a campaign, resumable with ``--checkpoint``; its
parser in ``_append_parser``, the load in ``_append``, its parts in ``_append_*``),
``upload-sheet`` (a CSV sheet as the vendor's multipart form), ``checkpoint show`` (where
a journalled load stands), ``callbacks serve|export`` (Ryng's callbacks, stored durably),
``reconcile`` (what became of each lead) and ``fake-server`` (a fake Ryng API to test a pipeline
against, end to end, without an account).

Exit codes: 0 every lead accepted; 1 some failed, unknown or invalid; 2 usage,
configuration or unreadable input; 3 the token was refused; 4 a resource failed while it
ran (Redis unreachable or lost, the journal's disk full, out of file descriptors); 130
interrupted (Ctrl-C); 141 standard output closed by its reader (``| head``), the command
stopped quietly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._version import __version__
from ._common import ExitCode, quiet_stdout, resolve_env

__all__ = ["main"]

# Each module has ``add_parser(commands)``, which adds its subcommand and sets ``run`` (a
# callable taking the parsed arguments and returning the exit code) as a default.
COMMANDS = (
    "_demo",
    "_append_parser",
    "_upload_sheet",
    "_checkpoint",
    "_callbacks",
    "_reconcile",
    "_fake_server",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    parser = argparse.ArgumentParser(
        prog="ryng-async",
        description="Tools for Ryng's Append Campaign API. Settings come from flags, else "
        "from RYNG_* environment variables (RYNG_SUBDOMAIN, RYNG_ACCESS_TOKEN, "
        "RYNG_BASE_URL, ...); the access token never from a flag.",
        epilog="Exit codes: 0 every lead accepted; 1 some failed, unknown or invalid; 2 usage, "
        "configuration or unreadable input; 3 the token was refused; 4 a resource failed "
        "while it ran (Redis unreachable or lost, the journal's disk full, out of file "
        "descriptors): run it again once it is back; 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"ryng-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_env(parser, args)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # ``... | head``: the reader has what it wanted
        quiet_stdout()
        return ExitCode.PIPE_CLOSED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
