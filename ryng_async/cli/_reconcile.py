"""``ryng-async reconcile FILE --report load.json --store callbacks.db``: what became of each lead.

Joins the leads of a load (the same file, read the same way as ``append`` read it), its
report (``append --report``) and the callbacks received (``callbacks serve``), lead by
lead, matched by a key you name (a custom field such as a CRM id, or the number). Writes
one line per lead as CSV or JSON Lines and a summary table; streaming, in bounded memory.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .. import ConfigurationError, ValidationError
from ..callbacks import reconcile, reconcile_to_file
from ._common import (
    CliError,
    Commands,
    ExitCode,
    add_default_region,
    add_reading_options,
    non_negative_float,
    plain,
    run_async,
    say,
)
from ._readers import InputError, LeadSource, aiter_leads, source_from_args

__all__ = ["add_parser"]


def add_parser(commands: Commands) -> None:
    """Add ``reconcile`` to the command line."""
    parser = commands.add_parser(
        "reconcile", help="say, lead by lead, what became of a load", description=plain(__doc__)
    )
    parser.set_defaults(run=run)
    parser.add_argument("file", metavar="FILE", help="the lead file the load read ('-': stdin)")
    parser.add_argument(
        "--report",
        type=Path,
        required=True,
        action="append",
        metavar="PATH",
        help="the load's JSON report (append --report) or its checkpoint journal; give it "
        "once per shard for a sharded load (or the shards' merged report once)",
    )
    parser.add_argument(
        "--store", type=Path, required=True, metavar="PATH", help="the callback store"
    )
    parser.add_argument(
        "--key",
        default="number",
        help="the field leads and callbacks are matched by: 'number' (the default; a number "
        "called for several leads is ambiguous and reported so) or a custom field, by its "
        "CSV column's name (crm_id) or as sent (customField3)",
    )
    parser.add_argument(
        "--deadline",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="flag accepted leads with no callback this long after the load as overdue",
    )
    parser.add_argument("--format", dest="out_format", choices=["csv", "jsonl"], default="csv")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="a file (default: stdout)"
    )
    reading = parser.add_argument_group("reading the file (as the load did)")
    add_reading_options(reading)
    add_default_region(
        reading,
        parser,
        "the region the load normalized numbers with (append --default-region), so "
        "that the file's national numbers match the E.164 numbers of the callbacks",
    )


async def _normalized(leads: AsyncIterator[Any], region: str | None) -> AsyncIterator[Any]:
    """The leads with their numbers in E.164, as ``append --default-region`` sent them.

    A number that does not parse is left as it is: the load refused it as invalid.
    """
    if not region:
        async for lead in leads:
            yield lead
        return
    from .._phone import normalizer

    normalize = normalizer(region)

    def normalized(lead: Any) -> Any:
        if not isinstance(lead, dict) or "number" not in lead:
            return lead
        try:
            return {**lead, "number": normalize(lead["number"])}
        except ValidationError:
            return lead

    async for lead in leads:
        yield normalized(lead)


_WIRE_KEY = re.compile(r"number|customField[1-9][0-9]*")


def resolve_key(key: str, source: LeadSource, number_column: str) -> str:
    """The wire field ``--key`` names: a CSV column's name, or ``number``/``customFieldN``.

    The file's columns become ``customField1``, ``customField2``... in order (the number
    and agents columns aside), as ``append`` sent them.
    """
    wanted = key.casefold()
    if source.custom_field_names is not None:
        fields = [
            name.removesuffix("Name")
            for name, title in source.custom_field_names.items()
            if title.casefold() == wanted
        ]
        if len(fields) > 1:
            raise CliError(f"--key {key!r}: {len(fields)} columns have that name")
        if fields:
            return fields[0]
        if wanted == number_column.casefold():
            return "number"
    if _WIRE_KEY.fullmatch(key):
        return key
    columns = ", ".join(repr(title) for title in source.header) or "none: the file is not CSV"
    raise CliError(
        f"--key {key!r} is no column of the file (its columns: {columns}) and not 'number' "
        "or a custom field like 'customField3'"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``reconcile``; return the exit code."""
    for path, what in (
        *((report, "report") for report in args.report),
        (args.store, "callback store"),
    ):
        if not path.is_file():
            say(f"ryng-async reconcile: error: no such {what}: {str(path)!r}")
            return ExitCode.USAGE
    loaded_at = datetime.fromtimestamp(
        max(report.stat().st_mtime for report in args.report), tz=UTC
    )

    async def write(out: IO[bytes]) -> int:
        source = source_from_args(args)
        lines = reconcile(
            _normalized(aiter_leads(source), args.default_region),
            args.report,
            args.store,
            key=resolve_key(args.key, source, args.number_column),
            deadline=None if args.deadline is None else timedelta(seconds=args.deadline),
            loaded_at=loaded_at,
        )
        summary = await reconcile_to_file(lines, out, format=args.out_format)
        out.flush()
        say(summary.table())
        return ExitCode.OK

    async def main() -> int:
        if args.out is None:
            return await write(sys.stdout.buffer)
        with args.out.open("wb") as out:
            return await write(out)

    try:
        return run_async(main)
    except (CliError, InputError, ConfigurationError, ValidationError, OSError) as exc:
        say(f"ryng-async reconcile: error: {exc}")
        return ExitCode.USAGE
