"""``ryng-async upload-sheet CAMPAIGN FILE.csv``: a CSV sheet as the vendor's multipart form.

The sheet is streamed from disk (`RyngClient.upload_sheet`); ``--agents a,b`` assigns the
leads among those agents, ``--agents in-file`` tells Ryng the sheet maps agents itself,
and without it Ryng's default (all agents) applies.
"""

from __future__ import annotations

import argparse
import sys

from .. import (
    AmbiguousError,
    AuthenticationError,
    ConfigurationError,
    RyngError,
    ValidationError,
)
from ._common import (
    CliError,
    Commands,
    ExitCode,
    add_connection_options,
    make_client,
    plain,
    run_async,
    say,
)

__all__ = ["add_parser"]


def add_parser(commands: Commands) -> None:
    """Add ``upload-sheet`` to the command line."""
    parser = commands.add_parser(
        "upload-sheet",
        help="append the leads of a CSV sheet, sent as multipart/form-data",
        description=plain(__doc__),
    )
    parser.set_defaults(run=run)
    parser.add_argument("campaign", metavar="CAMPAIGN", help="the campaign id")
    parser.add_argument("sheet", metavar="FILE.csv", help="the CSV sheet")
    parser.add_argument(
        "--agents",
        metavar="A,B|in-file",
        help="agent usernames, comma-separated, or 'in-file' when the sheet maps agents",
    )
    add_connection_options(parser)


def _agents(text: str | None) -> list[str] | str | None:
    if text is None:
        return None
    if text.strip() == "in-file":
        return "in-file"
    return [agent.strip() for agent in text.split(",") if agent.strip()]


def run(args: argparse.Namespace) -> int:
    """Run ``upload-sheet``; return the exit code."""

    async def upload() -> int:
        async with make_client(args) as client:
            response = await client.upload_sheet(
                args.campaign, args.sheet, agents=_agents(args.agents)
            )
        say(f"uploaded {args.sheet} to campaign {args.campaign}: {response.message}", sys.stdout)
        return ExitCode.OK

    try:
        return run_async(upload)
    except (CliError, ConfigurationError, ValidationError) as exc:
        say(f"ryng-async upload-sheet: error: {exc}")
        return ExitCode.USAGE
    except AuthenticationError as exc:
        say(f"ryng-async upload-sheet: error: the access token was refused: {exc}")
        return ExitCode.AUTH
    except AmbiguousError as exc:
        say(
            f"ryng-async upload-sheet: error: {exc}. The sheet may have been appended: check "
            "the campaign before uploading it again"
        )
        return ExitCode.NOT_ALL_ACCEPTED
    except RyngError as exc:
        say(f"ryng-async upload-sheet: error: the sheet was not appended: {exc}")
        return ExitCode.NOT_ALL_ACCEPTED
