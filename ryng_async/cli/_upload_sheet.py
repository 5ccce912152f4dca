"""``ryng-async upload-sheet CAMPAIGN FILE.csv``: a CSV sheet as the vendor's multipart form.

The sheet is streamed from disk (`RyngClient.upload_sheet`); ``--agents a,b`` assigns the
leads among those agents, ``--agents in-file`` tells Ryng the sheet maps agents itself,
and without it Ryng's default (all agents) applies.

Before anything is sent the sheet is read as ``append`` reads a CSV (``--encoding``,
``--delimiter``, ``--number-column``): a sheet that is not CSV text (gzip or ZIP bytes, a
workbook), has no number column, or holds a row whose number is not valid E.164 is
refused, naming the lines, and nothing is sent. ``--dry-run`` stops after the check.
``-`` reads the sheet from stdin (kept in a temporary file, since it is read twice). The
sheet is sent as it is, unless ``--default-region`` is given: then its numbers are read
as ``append --default-region`` reads them, and a copy with them in E.164 is sent (the
other cells as read; the csv module may quote them differently). Without it, a sheet
with spaces around some numbers is sent as a copy with them trimmed, as append does.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

from .. import (
    AmbiguousError,
    AuthenticationError,
    ConfigurationError,
    ResourceError,
    RyngError,
    ValidationError,
)
from .._columns import map_columns
from .._intake import validate_chunk
from ._common import (
    CliError,
    Commands,
    ExitCode,
    add_connection_options,
    add_default_region,
    delimiter,
    make_client,
    plain,
    run_async,
    say,
)
from ._readers import InputError, number_normalizer, open_source

__all__ = ["add_parser"]

_SHOWN = 10


def add_parser(commands: Commands) -> None:
    """Add ``upload-sheet`` to the command line."""
    parser = commands.add_parser(
        "upload-sheet",
        help="append the leads of a CSV sheet, sent as multipart/form-data",
        description=plain(__doc__),
    )
    parser.set_defaults(run=run)
    parser.add_argument("campaign", metavar="CAMPAIGN", help="the campaign id")
    parser.add_argument("sheet", metavar="FILE.csv", help="the CSV sheet ('-': stdin)")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the sheet, send nothing (exit 1: invalid)"
    )
    reading = parser.add_argument_group("reading the sheet (as append reads a CSV)")
    reading.add_argument("--encoding", default="utf-8", help="its text encoding")
    reading.add_argument("--delimiter", type=delimiter, default=None, help="default: a comma")
    reading.add_argument("--number-column", default="number", help="its column of numbers")
    add_default_region(
        reading,
        parser,
        "read numbers in national form (09876543210) as this region's (IN, US...) "
        "and send a copy of the sheet with them in E.164, as append does; needs the "
        "phone extra",
    )
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


_NOT_TEXT = {
    b"\x1f\x8b": "gzip-compressed: decompress it first (gunzip)",
    b"PK\x03\x04": "a ZIP file (an .xlsx workbook?): save it as CSV first",
    b"\xd0\xcf\x11\xe0": "an Excel 97 workbook (.xls): save it as CSV first",
}


def check_sheet(args: argparse.Namespace, path: str) -> tuple[int, int, list[str]]:
    """Read the sheet as append reads a CSV: (rows, invalid rows, the first problems)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise InputError(f"cannot read the sheet {args.sheet}: no such file") from None
    except OSError as exc:
        raise InputError(f"cannot read the sheet {args.sheet}: {exc.strerror or exc}") from exc
    for magic, what in _NOT_TEXT.items():
        if head.startswith(magic):
            raise InputError(f"{args.sheet} is not a CSV sheet: it is {what}")
    source = open_source(
        path, fmt="csv", encoding=args.encoding, delimiter=args.delimiter,
        number_column=args.number_column, normalize=number_normalizer(args.default_region),
    )  # fmt: skip
    rows = invalid = 0
    problems: list[str] = []
    try:
        for chunk in source.chunks():
            # The load's per-lead checks (a sheet is not batched: no size check).
            for lead in validate_chunk(chunk, rows)[2]:
                rejected = source.rejected.pop(lead.position, None)
                invalid += 1
                if len(problems) < _SHOWN:
                    if rejected is not None:
                        reason = rejected.reason
                    else:
                        reason = f"{lead.field}: {lead.reason}" if lead.field else lead.reason
                    problems.append(f"line {source.line_of(lead.position)}: {reason}")
            rows += len(chunk)
    finally:
        source.close()
    return rows, invalid, problems


def _spool_stdin() -> str:
    """Copy stdin to a temporary file: the sheet is read to check it, then sent."""
    with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
    return spool.name


def run(args: argparse.Namespace) -> int:
    """Run ``upload-sheet``; return the exit code."""
    spooled = _spool_stdin() if args.sheet == "-" else None
    try:
        return _run(args, spooled or args.sheet)
    finally:
        if spooled is not None:
            os.unlink(spooled)


def _run(args: argparse.Namespace, path: str) -> int:
    try:
        rows, invalid, problems = check_sheet(args, path)
    except (InputError, ValidationError, ConfigurationError) as exc:
        say(f"ryng-async upload-sheet: error: {str(exc).replace(path, args.sheet)}")
        return ExitCode.USAGE
    if invalid:
        more = f"\n  ... and {invalid - len(problems)} more" if invalid > len(problems) else ""
        say(
            f"ryng-async upload-sheet: {invalid:,} of {rows:,} rows of {args.sheet} are "
            "invalid; nothing was sent:\n  " + "\n  ".join(problems) + more
        )
        return ExitCode.NOT_ALL_ACCEPTED
    if rows == 0:
        say(f"ryng-async upload-sheet: error: {args.sheet} holds no rows; nothing was sent")
        return ExitCode.USAGE
    if args.dry_run:
        say(f"{args.sheet}: {rows:,} rows, every one valid (dry run: nothing sent)", sys.stdout)
        return ExitCode.OK

    async def upload() -> int:
        async with make_client(args) as client:
            response = await client.upload_sheet(args.campaign, sent, agents=_agents(args.agents))
        say(f"uploaded {args.sheet} to campaign {args.campaign}: {response.message}", sys.stdout)
        return ExitCode.OK

    folder: str | None = None
    try:
        normalize = number_normalizer(args.default_region)
        padded = 0 if normalize is not None else _padded_numbers(args, path)
        sent = path  # a sheet that needs no change is sent as it is, byte for byte
        if normalize is not None or padded:
            folder = tempfile.mkdtemp(prefix="ryng-sheet-")
            sent = _normalized_copy(args, path, folder, normalize or str.strip)
        if padded:
            say(
                f"{args.sheet}: {padded:,} numbers have spaces around them: sending a copy "
                "of the sheet with them trimmed",
                sys.stdout,
            )
        return run_async(upload)
    except (CliError, ConfigurationError, ValidationError) as exc:
        say(f"ryng-async upload-sheet: error: {exc}")
        return ExitCode.USAGE
    except AuthenticationError as exc:
        say(f"ryng-async upload-sheet: error: the access token was refused: {exc}")
        return ExitCode.AUTH
    except ResourceError as exc:
        say(f"ryng-async upload-sheet: error: the sheet was not sent: {exc}")
        return ExitCode.RESOURCE
    except AmbiguousError as exc:
        say(
            f"ryng-async upload-sheet: error: {exc}. The sheet may have been appended: check "
            "the campaign before uploading it again"
        )
        return ExitCode.NOT_ALL_ACCEPTED
    except RyngError as exc:
        say(f"ryng-async upload-sheet: error: the sheet was not appended: {exc}")
        return ExitCode.NOT_ALL_ACCEPTED
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _sheet_rows(args: argparse.Namespace, path: str) -> Iterator[tuple[list[str], int | None]]:
    """The sheet's rows, each with its number cell's index (None: the header, a blank row).

    Read with the sheet's encoding and delimiter, the header found as the reader finds it.
    """
    reading = "utf-8-sig" if codecs.lookup(args.encoding).name == "utf-8" else args.encoding
    with open(path, encoding=reading, newline="") as sheet:
        column: int | None = None
        for row in csv.reader(sheet, delimiter=args.delimiter or ","):
            if column is None and any(cell.strip() for cell in row):
                column = map_columns(row, number_column=args.number_column).number_index
                yield row, None
            elif column is not None and column < len(row) and row[column].strip():
                yield row, column
            else:
                yield row, None


def _padded_numbers(args: argparse.Namespace, path: str) -> int:
    """How many number cells of the sheet have spaces around them (append trims them)."""
    return sum(
        1 for row, column in _sheet_rows(args, path)
        if column is not None and row[column] != row[column].strip()
    )  # fmt: skip


def _normalized_copy(
    args: argparse.Namespace, path: str, folder: str, normalize: Callable[[str], str]
) -> str:
    """Write the sheet again in ``folder``, its numbers through ``normalize``; return its path.

    ``normalize`` puts a number in E.164 (``--default-region``) or only trims it.
    Called after `check_sheet` found every row valid, so every number normalizes; the
    copy keeps the sheet's name (Ryng may show it), encoding (and UTF-8 BOM), delimiter,
    line ending and rows; only the number cells change (the csv module may quote the
    others differently).
    """
    name = "sheet.csv" if args.sheet == "-" else os.path.basename(args.sheet)
    copy = os.path.join(folder, name)
    with open(path, "rb") as sheet:
        head = sheet.read(1 << 16)
    utf8 = codecs.lookup(args.encoding).name == "utf-8"
    encoding = "utf-8-sig" if utf8 and head.startswith(codecs.BOM_UTF8) else args.encoding
    text = head.decode(encoding, errors="replace")
    # The sheet's own line ending (the csv module writes \r\n by default).
    newline = text.find("\n")
    ending = "\r\n" if text[newline - 1 : newline] == "\r" else "\n"
    if newline < 0:
        ending = "\r" if "\r" in text else "\r\n"
    with open(copy, "w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=args.delimiter or ",", lineterminator=ending)
        for row, column in _sheet_rows(args, path):
            if column is not None:
                row[column] = normalize(row[column].strip())
            writer.writerow(row)
    return copy
