"""What ``append`` writes besides its summary.

The invalid rows, streamed to a listing and a spool; the ``--rejects`` file; the
``--report`` document; one-line messages for a person or a log collector.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, TextIO

import msgspec

from .. import BulkReport, InvalidLead
from ._append_options import InvalidGuard
from ._common import say
from ._readers import LeadSource

__all__ = [
    "KEPT_INVALID",
    "InvalidRows",
    "report_document",
    "show_invalid",
    "tell",
    "write_rejects",
    "write_report",
]

_encoder = msgspec.json.Encoder()


KEPT_INVALID = 100
"""Invalid leads a load's report describes in memory (``--report`` lists every one)."""


class InvalidRows:
    """Takes invalid leads as they are found and streams them out, keeping few in memory.

    Each becomes a row with its file line; a row is written at once to ``listing`` (the
    dry run's standard output), to a spool file beside the ``--report`` file, which the
    report copies (when ``report`` is given), and the first ``keep`` are held for the
    listing at the end of a load. Memory holds those few whatever the number of rows.
    """

    def __init__(
        self,
        source: LeadSource,
        *,
        listing: TextIO | None,
        keep: int,
        report: Path | None,
        rejects: Path | None = None,
    ) -> None:
        self.source = source
        self.listing = listing
        self.keep = keep
        self.kept: list[dict[str, Any]] = []
        self.count = 0
        self.guard: InvalidGuard | None = None
        self.rejects: IO[bytes] | None = None  # position and reason of each, for --rejects
        if rejects is not None:
            folder = rejects.parent if str(rejects.parent) else Path()
            self.rejects = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        self._spool: IO[bytes] | None = None
        if report is not None:
            folder = report.parent if str(report.parent) else Path()
            self._spool = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()

    def add(self, lead: InvalidLead) -> None:
        """Take one invalid lead (its row leaves `LeadSource.rejected` here).

        The load's ``on_invalid``: called on the event loop, it only writes to buffers.
        """
        source = self.source
        rejected = source.rejected.pop(lead.position, None)
        row = {
            "position": lead.position,
            "line": source.line_of(lead.position),
            "field": rejected.field if rejected is not None else lead.field,
            "reason": rejected.reason if rejected is not None else lead.reason,
        }
        if self._spool is not None:
            self._spool.write(b"," if self.count else b"")
            self._spool.write(_encoder.encode(row))
        if self.listing is not None:
            self.listing.write(_line(source, row) + "\n")
        if len(self.kept) < self.keep:
            self.kept.append(row)
        if self.rejects is not None:
            reason = f"{row['field']}: {row['reason']}" if row["field"] else row["reason"]
            self.rejects.write(_encoder.encode([lead.position, reason]) + b"\n")
        self.count += 1
        if self.guard is not None:
            self.guard.check(self.count, lead.position + 1)

    def copy_to(self, out: IO[bytes]) -> None:
        """Write the rows spooled so far as a JSON array."""
        out.write(b"[")
        if self._spool is not None:
            self._spool.seek(0)
            shutil.copyfileobj(self._spool, out)
            self._spool.seek(0, os.SEEK_END)
        out.write(b"]")

    def close(self) -> None:
        """Drop the spool files."""
        if self._spool is not None:
            self._spool.close()
        if self.rejects is not None:
            self.rejects.close()

    def write_rejects(self, args: argparse.Namespace) -> None:
        """Write ``--rejects``: the invalid rows as read, with their line and reason."""
        if self.rejects is None:
            return
        self.rejects.flush()
        self.rejects.seek(0)
        items = [_decode_reject(line) for line in self.rejects]
        items.sort()  # in input order already, but for a guarantee
        write_rejects(args, self.source, items)


_decode_reject = msgspec.json.Decoder(tuple[int, str]).decode


def write_rejects(
    args: argparse.Namespace, source: LeadSource, items: list[tuple[int, str]]
) -> None:
    """The reject file: each row's bytes as read plus its line and reason (a rename)."""
    from ._resolve import copy_rows

    path: Path = args.rejects
    encoding = args.encoding if source.format == "csv" else "utf-8"
    comma = args.delimiter or ("\t" if args.file.lower().endswith((".tsv", ".tsv.gz")) else ",")

    def cells(*values: str) -> bytes:
        text = io.StringIO()
        csv.writer(text, delimiter=comma, lineterminator="").writerow(values)
        return (comma + text.getvalue()).encode(encoding, "replace")

    def split(line: bytes) -> tuple[bytes, bytes]:
        body = line.rstrip(b"\r\n")
        return body, line[len(body) :] or b"\n"

    def header(line: bytes) -> bytes:
        body, end = split(line)
        return body + cells("line", "reason") + end

    def row(line: bytes, tag: tuple[int, str]) -> bytes:
        body, end = split(line)
        if source.format != "csv":
            text = body.decode("utf-8", "backslashreplace")
            return msgspec.json.encode({"line": tag[0], "reason": tag[1], "row": text}) + b"\n"
        return body + cells(str(tag[0]), tag[1]) + end

    wanted = ((position, (source.line_of(position) or 0, reason)) for position, reason in items)
    folder = path.parent if str(path.parent) else Path()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed below
        "wb", dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            copy_rows(args.file, source, wanted, handle, header=header, row=row)
        Path(handle.name).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(handle.name).unlink()
        raise


def _line(source: LeadSource, row: dict[str, Any]) -> str:
    field = f"{row['field']}: " if row["field"] else ""
    return f"{source.name}:{row['line']}: {field}{row['reason']}"


def show_invalid(rows: InvalidRows, *, as_json: bool) -> None:
    """List the invalid rows kept, and how many more there are, on standard error."""
    for row in rows.kept:
        if as_json:
            say(json.dumps({"event": "invalid_row", "file": rows.source.name, **row}))
        else:
            say(_line(rows.source, row))
    more = rows.count - len(rows.kept)
    if more > 0:
        text = f"... and {more:,} more invalid rows (--report PATH lists them all)"
        tell(as_json, "invalid_rows_not_shown", text, count=more)


def tell(as_json: bool, event: str, message: str, **fields: Any) -> None:
    """One line for a person on standard error, or a JSON line for a log collector."""
    say(json.dumps({"event": event, "message": message, **fields}) if as_json else message)


def write_report(path: Path, document: dict[str, Any], rows: InvalidRows | None) -> None:
    """Write the report whole or not at all (a temporary file, then a rename).

    With ``rows``, its ``invalid_leads`` are copied from their spool file, not held.
    """
    folder = path.parent if str(path.parent) else Path()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed below
        "wb", dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            if rows is None:
                handle.write(_encoder.encode(document) + b"\n")
            else:
                document = {k: v for k, v in document.items() if k != "invalid_leads"}
                handle.write(_encoder.encode(document)[:-1])
                handle.write(b',"invalid_leads":' if document else b'{"invalid_leads":')
                rows.copy_to(handle)
                handle.write(b"}\n")
        Path(handle.name).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(handle.name).unlink()
        raise


def report_document(
    report: BulkReport, source: LeadSource, code: int, ended: str
) -> dict[str, Any]:
    """The report as ``--report`` writes it, but for its invalid leads (streamed in)."""
    document = report.to_dict()
    document.pop("invalid_leads", None)
    for batch in document["batches"]:
        batch["line"] = source.line_of(batch["start"])
    # What to send again as the file's lines (the unread rest too: a last run to the end).
    document["failed_lines"] = [
        [source.line_of(start), None if count is None else source.line_of(start + count - 1)]
        for start, count in report.failed_ranges()
    ]
    document["input"] = {
        "file": source.name,
        "format": source.format,
        "rows": source.rows,
        "blank_rows": source.blank_rows,
        "bytes": source.total_bytes,
    }
    document["ended"] = ended
    document["exit_code"] = code
    return document
