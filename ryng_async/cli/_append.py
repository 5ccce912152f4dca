"""``ryng-async append CAMPAIGN FILE``: load a CSV or JSON Lines file into a campaign.

The file is read lazily, a chunk at a time in a worker thread (`aiter_leads`), and handed
to `RyngClient.bulk_append` as wire-form dicts, which the SDK validates a batch at a time;
rows that cannot become leads go in as `RejectedRow` s and come out as invalid leads with
their own reason. Every invalid lead is shown with its file line. The exit code says how
the load ended (see `ExitCode`); ``--report`` writes the whole report as JSON, on every
path (done, interrupted, stopped by a refused token or an unreadable line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, TextIO

import anyio
import msgspec

from .. import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    AgentMapping,
    AuthenticationError,
    BulkReport,
    ConfigurationError,
    InvalidLead,
    Limiter,
    ResourceError,
    ValidationError,
)
from .._batching import BodyTemplate, Packer
from .._intake import Intake
from .._seen import SeenNumbers
from .._validate import build_request
from ..checkpoint import CheckpointError
from ._common import (
    CliError,
    Commands,
    ExitCode,
    add_column_options,
    add_connection_options,
    add_default_region,
    delimiter,
    env_option,
    make_client,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_async,
    say,
    shard,
    write_stdout,
)
from ._progress import Meter, View, json_logging, make_view, summary_table, tick
from ._readers import (
    FORMATS,
    InputError,
    LeadSource,
    aiter_leads,
    number_normalizer,
    run_blocking,
    source_from_args,
)
from ._shared_rate import add_redis_options, redis_limiter

__all__ = ["add_parser", "load_options", "resume_hint"]

_encoder = msgspec.json.Encoder()


def add_parser(commands: Commands) -> None:
    """Add ``append`` to the command line."""
    parser = commands.add_parser(
        "append",
        help="load a CSV or JSON Lines file of leads into a campaign",
        description=(
            "Load a CSV or JSON Lines file into a campaign, in concurrent, rate-limited "
            "batches, with live progress, a summary, and an exit code scripts can trust: "
            "0 every lead accepted; 1 some failed, unknown or invalid; 2 usage, "
            "configuration or unreadable input; 3 the token was refused; 4 a resource "
            "failed while it ran (Redis unreachable or lost, the journal's disk full, out of "
            "file descriptors); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
        ),
        epilog=(
            "CSV: a header row; the number column (--number-column; spaces around a "
            "number are dropped), an optional agents column (--agents-column, usernames "
            "separated by ';' or '|'), and every other column (or those --columns names, "
            "or all but --exclude-columns) a custom field in column order, its header sent "
            "as the field's name (customField1Name is the first other column's header, and "
            "so on). JSON Lines: "
            "one lead a line in the API's wire form, e.g. "
            '{"number": "+919876543210", "agentsAssigned": ["a@x.com"], '
            '"customField1": "Max"}. Invalid rows are reported with their line numbers '
            "and the rest is loaded."
        ),
    )
    parser.set_defaults(run=run)
    parser.add_argument("campaign", metavar="CAMPAIGN", help="the campaign id")
    parser.add_argument("file", metavar="FILE", help="the lead file; '-' reads stdin")

    source = parser.add_argument_group("input")
    source.add_argument(
        "--format",
        choices=FORMATS,
        help="the file's format (default: from its extension: .csv/.tsv or .jsonl/.ndjson, "
        "optionally .gz; on stdin, from its first character)",
    )
    source.add_argument(
        "--encoding", default="utf-8", help="the CSV's text encoding (default: utf-8)"
    )
    source.add_argument(
        "--delimiter",
        type=delimiter,
        help="the CSV's delimiter: one character, or \\t or tab for a tab (default: ',', or "
        "a tab for .tsv)",
    )
    source.add_argument(
        "--number-column",
        default="number",
        metavar="NAME",
        help="the CSV column of phone numbers (default: number; case-insensitive)",
    )
    source.add_argument(
        "--agents-column",
        default="agentsAssigned",
        metavar="NAME",
        help="the CSV column of agent usernames (default: agentsAssigned)",
    )
    source.add_argument(
        "--skip-rows",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="skip N lines above the header (title lines); line numbers still count them",
    )
    add_column_options(source)
    add_default_region(
        source,
        parser,
        "normalize numbers to E.164 with libphonenumber, reading national formats "
        "(09876543210, 98765 43210) as this region's (IN, US...); needs the phone extra",
    )

    campaign = parser.add_argument_group("campaign")
    campaign.add_argument("--name", help="the campaign name Ryng shows for this append")
    campaign.add_argument(
        "--agent-mapping",
        choices=[m.value for m in AgentMapping],
        help="how calls are assigned to agents (default: global with --agents, inline when "
        "the CSV has an agents column, else Ryng's all-agents)",
    )
    campaign.add_argument(
        "--agents", metavar="A,B", help="agent usernames, comma-separated (agent mapping global)"
    )
    campaign.add_argument(
        "--custom-field-names",
        metavar="NAMES",
        help="the custom fields' names, comma-separated in field order, or a JSON object "
        '({"customField1Name": "Name"}); overrides the CSV header; "" sends none',
    )
    campaign.add_argument("--terminal-callback-url", metavar="URL")
    campaign.add_argument("--connect-callback-url", metavar="URL")

    load = parser.add_argument_group("load")
    env_option(
        load,
        parser,
        "--batch-size",
        env="RYNG_BATCH_SIZE",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="most leads per request",
    )
    env_option(
        load,
        parser,
        "--max-batch-bytes",
        env="RYNG_MAX_BATCH_BYTES",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_BYTES,
        metavar="BYTES",
        help="most bytes per request body",
    )
    env_option(
        load,
        parser,
        "--concurrency",
        env="RYNG_CONCURRENCY",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="most requests in flight",
    )
    env_option(
        load,
        parser,
        "--rate-limit",
        env="RYNG_RATE_LIMIT",
        type=positive_float,
        metavar="PER_SECOND",
        help="most requests per second (default: none; a 429 still slows the load)",
    )
    add_redis_options(load, parser)
    load.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
        metavar="N",
        help="stop after N batches in a row are not accepted; 0 never stops "
        f"(default: {DEFAULT_MAX_CONSECUTIVE_FAILURES})",
    )
    load.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="an SQLite journal (made if missing): run the same command again after a "
        "crash or Ctrl-C and only what was not accepted is sent",
    )
    load.add_argument(
        "--resend-unknown",
        action="store_true",
        help="with --checkpoint: send again the batches in flight when an earlier run "
        "stopped (they may already be in Ryng: check them first)",
    )
    load.add_argument(
        "--shard",
        type=shard,
        metavar="I/N",
        help="send only shard I of N (from 0) of the file; N workers with the same file and "
        "I = 0..N-1 send it exactly once (give each its own --checkpoint)",
    )
    env_option(
        load,
        parser,
        "--stop-grace",
        env="RYNG_STOP_GRACE",
        type=non_negative_float,
        metavar="SECONDS",
        help="after a first Ctrl-C or SIGTERM, nothing new is sent and the requests in "
        "flight get this long to end before they are cancelled (a second signal cancels "
        "them at once; default: --timeout)",
    )
    load.add_argument(
        "--dedupe",
        action="store_true",
        help="refuse, as invalid, a lead whose number came earlier in the file",
    )
    load.add_argument(
        "--max-invalid",
        type=max_invalid,
        default=None,
        metavar="N|N%",
        help="stop before sending anything more once more than N rows (or N%% of the rows "
        f"read, checked from the {_SHARE_FROM}th row on) are invalid: a file read with the "
        "wrong settings is refused rather than sent (exit 1)",
    )
    load.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="read only the first N data rows (a trial run)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--dry-run",
        action="store_true",
        help="read and validate only: print every invalid row to standard output, one a "
        "line as FILE:LINE: FIELD: REASON (the dry run's product, ready for grep), send "
        "nothing; exit 0 when every row is valid (no token needed)",
    )
    output.add_argument(
        "--report", type=Path, metavar="PATH", help="write the whole report here as JSON"
    )
    output.add_argument(
        "--rejects",
        type=Path,
        metavar="PATH",
        help="write every invalid row here as it was read (the header first, same columns "
        "and bytes) plus 'line' and 'reason' columns (JSON Lines input: one object a row "
        "with line, reason and the row's text); not with stdin",
    )
    output.add_argument(
        "--show-invalid",
        type=int,
        default=20,
        metavar="N",
        help="invalid rows listed on standard error at the end of a load, where standard "
        "output carries the summary (default: 20; --dry-run lists all)",
    )
    env_option(
        output,
        parser,
        "--progress",
        env="RYNG_PROGRESS",
        choices=["auto", "bar", "log", "none"],
        default="auto",
        help="a live bar on a terminal, else a log line every --progress-interval seconds",
    )
    env_option(
        output,
        parser,
        "--progress-interval",
        env="RYNG_PROGRESS_INTERVAL",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress log lines",
    )
    env_option(
        output,
        parser,
        "--log-format",
        env="RYNG_LOG_FORMAT",
        choices=["text", "json"],
        default="text",
        help="progress lines and the summary as text or as JSON lines (for log collectors)",
    )
    add_connection_options(parser)


# -- what the command line asks for -------------------------------------------------

_SHARE_FROM = 100
"""--max-invalid N%: the share is checked once this many rows were read (or at the end)."""


def max_invalid(text: str) -> tuple[int | None, float | None]:
    """``"50"`` -> (50, None); ``"5%"`` -> (None, 0.05)."""
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1])
            if not 0 <= share <= 100:
                raise ValueError  # noqa: TRY301 - reported below
            return None, share / 100
        count = int(value)
        if count < 0:
            raise ValueError  # noqa: TRY301 - reported below
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of rows (50) or a share (5%), got {text!r}"
        ) from None
    return count, None


class _InvalidGuard:
    """--max-invalid: sets ``stop`` once too many of the rows read are invalid."""

    def __init__(self, limit: tuple[int | None, float | None], stop: asyncio.Event) -> None:
        self.count, self.share = limit
        self.stop = stop
        self.tripped: str | None = None

    def check(self, invalid: int, read: int) -> None:
        if self.tripped is not None:
            return
        if self.count is not None and invalid > self.count:
            self.tripped = f"{invalid:,} invalid rows, more than --max-invalid {self.count:,}"
        elif self.share is not None and read >= _SHARE_FROM and invalid > self.share * read:
            self.tripped = (
                f"{invalid:,} of the first {read:,} rows invalid ({invalid / read:.1%}), "
                f"more than --max-invalid {self.share:.1%}"
            )
        if self.tripped is not None:
            self.stop.set()


def _custom_field_names(text: str) -> dict[str, str] | None:
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise CliError(f"--custom-field-names is not valid JSON: {exc}") from None
        if not isinstance(names, dict):
            raise CliError("--custom-field-names must be a JSON object")
        return names
    return {f"customField{i}Name": name.strip() for i, name in enumerate(text.split(","), 1)}


def _campaign_options(args: argparse.Namespace, source: LeadSource | None) -> dict[str, Any]:
    """The campaign options of the append, from the flags and the CSV header."""
    agents = None
    if args.agents is not None:
        agents = [agent.strip() for agent in args.agents.split(",") if agent.strip()]
    mapping = args.agent_mapping
    if mapping is None and agents is not None:
        mapping = AgentMapping.GLOBAL.value
    elif mapping is None and source is not None and source.has_agents:
        mapping = AgentMapping.INLINE.value
    if args.custom_field_names is not None:
        names = _custom_field_names(args.custom_field_names)
    else:
        names = None if source is None else source.custom_field_names
    return {
        "name": args.name,
        "agent_mapping": mapping,
        "agents": agents,
        "custom_field_names": names,
        "terminal_callback_url": args.terminal_callback_url,
        "connect_callback_url": args.connect_callback_url,
    }


def load_options(args: argparse.Namespace, source: LeadSource) -> dict[str, Any]:
    """The keyword arguments of `RyngClient.bulk_append` for this command line.

    Options added to the command (a checkpoint) go in here.
    """
    failures = args.max_consecutive_failures
    return {
        "batch_size": args.batch_size,
        "max_batch_bytes": args.max_batch_bytes,
        "concurrency": args.concurrency,
        "rate_limit": args.rate_limit,
        "dedupe": args.dedupe,
        "max_consecutive_failures": failures if failures > 0 else None,
        "checkpoint": args.checkpoint,
        "resend_unknown": args.resend_unknown,
        "shard": args.shard,
        "stop_grace": getattr(args, "stop_grace", None),
        **_campaign_options(args, source),
    }


def _other_options_hint(exc: Exception, options: dict[str, Any]) -> str:
    """Which options make a journal's "campaign options differ" on a resumed run."""
    if not isinstance(exc, CheckpointError) or "campaign options differ" not in str(exc):
        return ""
    names = options["custom_field_names"]
    return (
        ". A resumed run sends the first run's campaign options, its custom fields among "
        "them (this run's: " + (", ".join(names.values()) if names else "none") + "): give "
        "it the first run's --columns or --exclude-columns, and its --name, --agents, "
        "--agent-mapping, --custom-field-names and callback URLs"
    )


def resume_hint(args: argparse.Namespace) -> str | None:
    """What to tell an operator after an interrupted load, if it can be resumed."""
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is None:
        return None
    return (
        f"to resume, run the same command again: the checkpoint {str(checkpoint)!r} "
        "holds what was accepted, and only the rest is sent"
    )


def _open(args: argparse.Namespace) -> LeadSource:
    return source_from_args(args, normalize=number_normalizer(args.default_region))


def _check_report_path(path: Path | None, flag: str = "--report") -> None:
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path()
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"{flag} {str(path)!r}: not a writable file path")


# -- invalid rows, streamed ---------------------------------------------------------

_KEPT_INVALID = 100
"""Invalid leads a load's report describes in memory (``--report`` lists every one)."""


class _InvalidRows:
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
        self.guard: _InvalidGuard | None = None
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


def _show_invalid(rows: _InvalidRows, *, as_json: bool) -> None:
    """List the invalid rows kept, and how many more there are, on standard error."""
    for row in rows.kept:
        if as_json:
            say(json.dumps({"event": "invalid_row", "file": rows.source.name, **row}))
        else:
            say(_line(rows.source, row))
    more = rows.count - len(rows.kept)
    if more > 0:
        text = f"... and {more:,} more invalid rows (--report PATH lists them all)"
        _tell(as_json, "invalid_rows_not_shown", text, count=more)


def _tell(as_json: bool, event: str, message: str, **fields: Any) -> None:
    """One line for a person on standard error, or a JSON line for a log collector."""
    say(json.dumps({"event": event, "message": message, **fields}) if as_json else message)


def _write_report(path: Path, document: dict[str, Any], rows: _InvalidRows | None) -> None:
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


def _report_document(
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


# -- dry run -----------------------------------------------------------------------


def _check_rejects(args: argparse.Namespace) -> None:
    if args.rejects is None:
        return
    if args.file == "-":
        raise CliError("--rejects reads the file again to copy its rows: not with stdin ('-')")
    _check_report_path(args.rejects, "--rejects")


def _dry_run(args: argparse.Namespace) -> int:
    _check_report_path(args.report)
    _check_rejects(args)
    as_json = args.log_format == "json"
    source = _open(args)
    rows = _InvalidRows(
        source, listing=sys.stdout, keep=0, report=args.report, rejects=args.rejects
    )
    try:
        intake: Intake | None = None
        try:
            intake = _intake(args, source)
            position = 0
            guard = None
            if args.max_invalid is not None:
                guard = rows.guard = _InvalidGuard(args.max_invalid, asyncio.Event())
            for chunk in source.chunks():
                if args.limit is not None and position + len(chunk) >= args.limit:
                    chunk = chunk[: args.limit - position]  # noqa: PLW2901 - the rows wanted
                found = intake.check(chunk)
                for lead in found:
                    rows.add(lead)
                    if guard is not None and guard.tripped:
                        break
                if guard is not None and guard.tripped:
                    position = found[-1].position + 1 if found else position
                    break
                position += len(chunk)
                if position == args.limit:
                    break
        finally:
            source.close()
            if intake is not None:
                intake.close()
        sys.stdout.flush()
        if rows.guard is not None and rows.guard.tripped:
            _tell(as_json, "max_invalid", f"ryng-async append: stopped: {rows.guard.tripped}")
        code = ExitCode.NOT_ALL_ACCEPTED if rows.count else ExitCode.OK
        valid = position - rows.count
        _tell(
            as_json,
            "dry_run",
            f"dry run: {position:,} rows read from {source.name}, {valid:,} valid, "
            f"{rows.count:,} invalid; nothing was sent",
            file=source.name,
            total=position,
            valid=valid,
            invalid=rows.count,
            exit_code=int(code),
        )
        if args.report is not None:
            document = {
                "dry_run": True,
                "total": position,
                "valid": valid,
                "invalid": rows.count,
                "input": {"file": source.name, "format": source.format, "rows": source.rows},
                "exit_code": int(code),
            }
            _write_report(args.report, document, rows)
        rows.write_rejects(args)
        return code
    finally:
        rows.close()


def _intake(args: argparse.Namespace, source: LeadSource) -> Intake:
    """The load's intake, to check rows as a load would: validation, dedupe, size.

    A duplicate's reason is the dry run's own: "duplicate of an earlier lead" (a load
    says "... in this load").
    """
    template = BodyTemplate(build_request(**_campaign_options(args, source)))
    return Intake(
        (),
        packer=Packer(template, args.batch_size, args.max_batch_bytes),
        batch_size=args.batch_size,
        seen=SeenNumbers() if args.dedupe else None,
        duplicate_reason="duplicate of an earlier lead",
    )


# -- the load ------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run ``append``; return the exit code."""
    as_json = args.log_format == "json"
    try:
        with json_logging(enabled=as_json):
            if args.dry_run:
                return _dry_run(args)
            return run_async(lambda: _load(args))
    except (CliError, InputError, ConfigurationError, ValidationError) as exc:
        _tell(as_json, "error", f"ryng-async append: error: {exc}")
        return ExitCode.USAGE
    except ResourceError as exc:  # after ConfigurationError: a refused journal is both
        _tell(as_json, "error", f"ryng-async append: error: {exc}")
        return ExitCode.RESOURCE


def _describe(args: argparse.Namespace, source: LeadSource, options: dict[str, Any]) -> str:
    size = "" if source.total_bytes is None else f", {source.total_bytes / 1e6:,.1f} MB"
    parts = [
        f"loading {source.name} ({source.format}{size}) into campaign {args.campaign}",
        f"batches of {options['batch_size']}, {options['concurrency']} at a time"
        + ("" if args.rate_limit is None else f", at most {args.rate_limit:g} requests/s")
        + (" shared through Redis" if getattr(args, "redis_url", None) else ""),
    ]
    if options["agent_mapping"]:
        parts.append(f"agent mapping {options['agent_mapping']}")
    names = options["custom_field_names"]
    if names:
        parts.append("custom fields: " + ", ".join(names.values()))
    if args.default_region:
        parts.append(f"numbers normalized as {args.default_region.upper()}'s")
    return "; ".join(parts)


async def _load(args: argparse.Namespace) -> int:
    _check_report_path(args.report)
    _check_rejects(args)
    client = make_client(args)
    limiter = redis_limiter(args)
    try:
        return await _load_with(args, client, limiter)
    finally:
        if limiter is not None:
            with anyio.CancelScope(shield=True):
                await limiter.aclose()


async def _load_with(args: argparse.Namespace, client: Any, limiter: Limiter | None) -> int:
    with _Interrupts(args) as interrupts:
        source = None
        with interrupts.scope():
            source = await run_blocking(_open, args)
        if source is None:  # interrupted while opening the file
            _tell(
                args.log_format == "json",
                "interrupted",
                "ryng-async append: interrupted before the load started; nothing was sent",
            )
            return interrupts.code or ExitCode.INTERRUPTED
        rows = _InvalidRows(
            source, listing=None, keep=args.show_invalid, report=args.report, rejects=args.rejects
        )
        try:
            return await _load_source(args, client, source, interrupts, rows, limiter=limiter)
        finally:
            rows.close()
            source.close()


async def _load_source(
    args: argparse.Namespace,
    client: Any,
    source: LeadSource,
    interrupts: _Interrupts,
    rows: _InvalidRows,
    *,
    limiter: Limiter | None = None,
) -> int:
    options = load_options(args, source)
    if limiter is not None:  # --redis-url: the shared schedule paces at --rate-limit
        options.update(limiter=limiter, rate_limit=None)
    if args.max_invalid is not None:
        rows.guard = _InvalidGuard(args.max_invalid, interrupts.stop)
    # Every invalid row streams out as it is found (to --report and the listing at the
    # end); the report itself describes only the first few.
    options.update(on_invalid=rows.add, keep_invalid_leads=_KEPT_INVALID)
    as_json = args.log_format == "json"
    say(
        json.dumps({"event": "start", "file": source.name, "campaign": args.campaign})
        if as_json
        else _describe(args, source, options)
    )
    meter = Meter(
        total_bytes=source.total_bytes,
        bytes_read=lambda: source.bytes_read,
        rows_read=lambda: source.rows,
    )
    view = make_view(
        meter, mode=args.progress, log_format=args.log_format, interval=args.progress_interval
    )
    interrupts.meter = meter
    report = BulkReport()
    code: int = ExitCode.OK
    error: str | None = None
    async with client:
        view.start()
        try:
            with interrupts.scope(gentle=True):
                await _run_load(
                    client,
                    args.campaign,
                    source,
                    options={**options, "stop": interrupts.stop},
                    meter=meter,
                    view=view,
                    report=report,
                    limit=args.limit,
                )
        except AuthenticationError as exc:
            code, error = ExitCode.AUTH, f"the access token was refused: {exc}"
        except (InputError, CliError, ValidationError, ConfigurationError) as exc:
            code, error = ExitCode.USAGE, str(exc) + _other_options_hint(exc, options)
        except ResourceError as exc:  # after ConfigurationError: a refused journal is both
            code, error = ExitCode.RESOURCE, str(exc)
        finally:
            view.stop()
    code = interrupts.code or code
    if code == ExitCode.OK and not report.ok:
        code = ExitCode.NOT_ALL_ACCEPTED
    return _finish(args, source, report, code, error, rows=rows)


async def _run_load(
    client: Any,
    campaign: str,
    source: LeadSource,
    *,
    options: dict[str, Any],
    meter: Meter,
    view: View,
    report: BulkReport,
    limit: int | None = None,
) -> None:
    """The load, with the view ticking beside it; raise what stopped it, bare."""
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tick, view)
        try:
            await client.bulk_append(
                campaign,
                _first(aiter_leads(source), limit, source),
                on_progress=meter.update,
                report=report,
                **options,
            )
        except Exception as exc:  # raised below, not wrapped in an ExceptionGroup
            failure = exc
        finally:
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _checkpoint_hint(args: argparse.Namespace, report: BulkReport) -> str:
    """Where to go from unknown or failed leads, with the journal's commands."""
    path = shlex.quote(str(args.checkpoint))
    file = "" if args.file == "-" else f" --file {shlex.quote(args.file)}"
    lines = [f"to see the batches left: ryng-async checkpoint show {path}{file}"]
    if report.unknown:
        lines.append(
            f"{report.unknown:,} leads are unknown (maybe in Ryng): write them out with "
            f"ryng-async checkpoint export {path}{file or ' --file FILE'} --state unknown "
            "-o unknown.csv, check them in Ryng, then record it: ryng-async checkpoint "
            f"resolve {path} --as accepted|not-received --all (or --callbacks STORE); the "
            "next run then sends the not-received ones"
        )
    if report.failed:
        lines.append(
            f"{report.failed:,} leads failed: running the same command again sends them "
            f"(ryng-async checkpoint export {path}{file or ' --file FILE'} --state failed "
            "-o failed.csv writes their rows)"
        )
    return "\n".join(lines)


async def _first(
    leads: AsyncIterator[Any], limit: int | None, source: LeadSource
) -> AsyncIterator[Any]:
    """The first ``limit`` leads (all if None); the source then counts only those rows."""
    if limit is None:
        async for lead in leads:
            yield lead
        return
    taken = 0
    async for lead in leads:
        if taken == limit:
            break
        yield lead
        taken += 1
    source.rows = min(source.rows, limit)


class _Interrupts:
    """SIGINT and SIGTERM: the first stops the load gently, the second cancels it.

    The first signal sets `stop`, the load's stop event (nothing new is read or sent; the
    requests in flight end, within ``--stop-grace``), says so, and cancels the scopes made
    with ``scope()`` (opening the file: nothing was sent yet). The second cancels the
    scopes made with ``scope(gentle=True)`` too: the requests still in flight end
    ``unknown``. A third takes the signal's default action.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.received: list[int] = []
        self.stop = asyncio.Event()
        self.meter: Meter | None = None
        self._args = args
        self._as_json = getattr(args, "log_format", "text") == "json"
        self._scopes: list[tuple[anyio.CancelScope, bool]] = []
        self._installed: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def code(self) -> int | None:
        """The exit code the signal received asks for, or None."""
        if not self.received:
            return None
        if self.received[0] == signal.SIGTERM:
            return ExitCode.TERMINATED
        return ExitCode.INTERRUPTED

    def scope(self, *, gentle: bool = False) -> anyio.CancelScope:
        """A cancel scope the first signal cancels (the second, if ``gentle``)."""
        scope = anyio.CancelScope()
        if len(self.received) > (1 if gentle else 0):
            scope.cancel()
        self._scopes.append((scope, gentle))
        return scope

    def _handle(self, signum: int) -> None:
        self.received.append(signum)
        if len(self.received) > 2:
            self._uninstall()
            signal.raise_signal(signum)
            return
        first = len(self.received) == 1
        if first:
            self.stop.set()
            self._tell_stopping(signum)
        else:
            name = signal.Signals(signum).name
            _tell(
                self._as_json,
                "cancelling",
                f"ryng-async append: {name} again: cancelling the requests in flight (they "
                "end 'unknown': they may have been appended)",
                signal=name,
            )
        for scope, gentle in self._scopes:
            if not gentle or not first:
                scope.cancel()

    def _tell_stopping(self, signum: int) -> None:
        name = signal.Signals(signum).name
        grace = self._args.stop_grace
        if grace is None:
            grace = self._args.timeout
        if self.meter is not None:
            self.meter.stopping = True
        _tell(
            self._as_json,
            "stopping",
            f"ryng-async append: {name}: stopping: nothing new is sent; waiting up to "
            f"{grace:g}s for the requests in flight to end (send it again to cancel them: "
            "they would end 'unknown')",
            signal=name,
            grace_seconds=grace,
        )

    def __enter__(self) -> _Interrupts:
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                self._loop.add_signal_handler(signum, self._handle, signum)
                self._installed.append(signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        installed, self._installed = self._installed, []
        if self._loop is not None:
            for signum in installed:
                self._loop.remove_signal_handler(signum)


def _finish(
    args: argparse.Namespace,
    source: LeadSource,
    report: BulkReport,
    code: int,
    error: str | None,
    *,
    rows: _InvalidRows,
) -> int:
    as_json = args.log_format == "json"
    ended = {
        ExitCode.INTERRUPTED: "interrupted",
        ExitCode.TERMINATED: "terminated",
        ExitCode.AUTH: "token refused",
        ExitCode.USAGE: "input error",
        ExitCode.RESOURCE: "resource failed",
    }.get(ExitCode(code), "done")
    if error is not None:
        _tell(as_json, "error", f"ryng-async append: error: {error}")
    if rows.count:
        _show_invalid(rows, as_json=as_json)
    if rows.guard is not None and rows.guard.tripped:
        _tell(
            as_json,
            "max_invalid",
            f"ryng-async append: stopped: {rows.guard.tripped}; nothing more was sent "
            "(check the file's settings: --delimiter, --encoding, --number-column)",
        )
    if as_json:
        summary = {"event": "summary", "ended": ended, "exit_code": int(code)}
        summary.update(
            {k: v for k, v in report.to_dict().items() if k not in {"batches", "invalid_leads"}}
        )
        write_stdout(json.dumps(summary) + "\n")
    else:
        extra = {}
        if source.blank_rows:
            extra["blank rows skipped"] = f"{source.blank_rows:,}"
        verdict = (
            "every lead accepted"
            if report.ok
            else f"{ended}: not every lead was accepted"
            if ended != "done"
            else "not every lead was accepted"
        )
        write_stdout(f"{verdict} (exit {int(code)})\n{summary_table(report, extra=extra)}\n")
    if report.unread:
        first = min(report.unread.values())
        line = source.line_of(first)
        at = f" (line {line} of {source.name})" if line is not None else ""
        _tell(
            as_json,
            "unread",
            f"the load stopped before reading input position {first:,}{at}: the rows from "
            "there on were never read; send them again (--report lists every range to "
            "send again under failed_ranges)",
        )
    if args.checkpoint is not None and (report.unknown or report.failed):
        _tell(as_json, "checkpoint_hint", _checkpoint_hint(args, report))
    if code in {ExitCode.INTERRUPTED, ExitCode.TERMINATED}:
        cancelled = (
            f"; {report.unknown:,} leads of requests cancelled in flight are 'unknown' (they "
            "may have been appended)"
            if report.unknown
            else "; every request sent got its answer"
        )
        _tell(
            as_json, "hint", resume_hint(args) or f"the rest of the file was never sent{cancelled}"
        )
    try:
        rows.write_rejects(args)
    except (OSError, InputError) as exc:
        _tell(as_json, "error", f"ryng-async append: error: cannot write --rejects: {exc}")
        code = max(code, ExitCode.USAGE) if code < ExitCode.AUTH else code
    if args.report is not None:
        try:
            _write_report(args.report, _report_document(report, source, code, ended), rows)
        except OSError as exc:
            _tell(
                as_json,
                "error",
                f"ryng-async append: error: cannot write --report {str(args.report)!r}: {exc}",
            )
            return max(code, ExitCode.USAGE) if code < ExitCode.AUTH else code
    return code
