"""``ryng-async append CAMPAIGN FILE``: load a CSV or JSON Lines file into a campaign.

The file is read lazily, a chunk at a time in a worker thread (`lead_chunks`), and handed
to `RyngClient.bulk_append` as wire-form dicts, which the SDK validates a batch at a time;
rows that cannot become leads go in as `RejectedRow` s and come out as invalid leads with
their own reason. Every invalid lead is shown with its file line. The exit code says how
the load ended (see `ExitCode`); ``--report`` writes the whole report as JSON, on every
path (done, interrupted, stopped by a refused token or an unreadable line).
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

import anyio

from .. import (
    AuthenticationError,
    BulkReport,
    ConfigurationError,
    Limiter,
    ResourceError,
    ValidationError,
)
from ._append_dry_run import dry_run
from ._append_interrupts import Interrupts
from ._append_options import (
    InvalidGuard,
    check_rejects,
    check_report_path,
    load_options,
    open_lead_file,
    other_options_hint,
    resume_hint,
)
from ._append_output import (
    KEPT_INVALID,
    InvalidRows,
    report_document,
    show_invalid,
    tell,
    write_report,
)
from ._common import CliError, ExitCode, make_client, run_async, say, write_stdout
from ._progress import (
    Meter,
    View,
    json_logging,
    make_view,
    summary_table,
    text_warnings,
    tick,
)
from ._readers import InputError, LeadSource, lead_chunks, run_blocking
from ._shared_rate import redis_limiter

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Run ``append``; return the exit code."""
    as_json = args.log_format == "json"
    try:
        with json_logging(enabled=as_json), text_warnings(enabled=not as_json):
            if args.dry_run:
                return dry_run(args)
            return run_async(lambda: _load(args))
    except (CliError, InputError, ConfigurationError, ValidationError) as exc:
        tell(as_json, "error", f"ryng-async append: error: {exc}")
        return ExitCode.USAGE
    except ResourceError as exc:  # after ConfigurationError: a refused journal is both
        tell(as_json, "error", f"ryng-async append: error: {exc}")
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
    check_report_path(args.report)
    check_rejects(args)
    client = make_client(args)
    limiter = redis_limiter(args)
    try:
        return await _load_with(args, client, limiter)
    finally:
        if limiter is not None:
            with anyio.CancelScope(shield=True):
                await limiter.aclose()


async def _load_with(args: argparse.Namespace, client: Any, limiter: Limiter | None) -> int:
    with Interrupts(args) as interrupts:
        source = None
        with interrupts.scope():
            source = await run_blocking(open_lead_file, args)
        if source is None:  # interrupted while opening the file
            tell(
                args.log_format == "json",
                "interrupted",
                "ryng-async append: interrupted before the load started; nothing was sent",
            )
            return interrupts.code or ExitCode.INTERRUPTED
        rows = InvalidRows(
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
    interrupts: Interrupts,
    rows: InvalidRows,
    *,
    limiter: Limiter | None = None,
) -> int:
    options = load_options(args, source)
    if limiter is not None:  # --redis-url: the shared schedule paces at --rate-limit
        options.update(limiter=limiter, rate_limit=None)
    if args.max_invalid is not None:
        rows.guard = InvalidGuard(args.max_invalid, interrupts.stop)
    # Every invalid row streams out as it is found (to --report and the listing at the
    # end); the report itself describes only the first few.
    options.update(on_invalid=rows.add, keep_invalid_leads=KEPT_INVALID)
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
            code, error = ExitCode.USAGE, str(exc) + other_options_hint(exc, options)
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
                lead_chunks(source, limit),
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


def _finish(
    args: argparse.Namespace,
    source: LeadSource,
    report: BulkReport,
    code: int,
    error: str | None,
    *,
    rows: InvalidRows,
) -> int:
    as_json = args.log_format == "json"
    # Refused before the first row (a journal of another load, a bad option): what to fix is
    # the error, not rows to send again.
    refused_first = error is not None and report.input_read == 0 and not report.batches
    ended = {
        ExitCode.INTERRUPTED: "interrupted",
        ExitCode.TERMINATED: "terminated",
        ExitCode.AUTH: "token refused",
        ExitCode.USAGE: "input error",
        ExitCode.RESOURCE: "resource failed",
    }.get(ExitCode(code), "done")
    if error is not None:
        tell(as_json, "error", f"ryng-async append: error: {error}")
    if rows.count:
        show_invalid(rows, as_json=as_json)
    if rows.guard is not None and rows.guard.tripped:
        tell(
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
            else f"{ended}: nothing was read or sent"
            if refused_first
            else f"{ended}: not every lead was accepted"
            if ended != "done"
            else "not every lead was accepted"
        )
        write_stdout(f"{verdict} (exit {int(code)})\n{summary_table(report, extra=extra)}\n")
    if report.unread and not refused_first:
        first = min(report.unread.values())
        line = source.line_of(first)
        at = f" (line {line} of {source.name})" if line is not None else ""
        tell(
            as_json,
            "unread",
            f"the load stopped before reading input position {first:,}{at}: the rows from "
            "there on were never read; send them again (--report lists every range to "
            "send again under failed_ranges)",
        )
    if args.checkpoint is not None and (report.unknown or report.failed):
        tell(as_json, "checkpoint_hint", _checkpoint_hint(args, report))
    if code in {ExitCode.INTERRUPTED, ExitCode.TERMINATED}:
        cancelled = (
            f"; {report.unknown:,} leads of requests cancelled in flight are 'unknown' (they "
            "may have been appended)"
            if report.unknown
            else "; every request sent got its answer"
        )
        tell(
            as_json, "hint", resume_hint(args) or f"the rest of the file was never sent{cancelled}"
        )
    try:
        rows.write_rejects(args)
    except (OSError, InputError) as exc:
        tell(as_json, "error", f"ryng-async append: error: cannot write --rejects: {exc}")
        code = max(code, ExitCode.USAGE) if code < ExitCode.AUTH else code
    if args.report is not None:
        try:
            write_report(args.report, report_document(report, source, code, ended), rows)
        except OSError as exc:
            tell(
                as_json,
                "error",
                f"ryng-async append: error: cannot write --report {str(args.report)!r}: {exc}",
            )
            return max(code, ExitCode.USAGE) if code < ExitCode.AUTH else code
    return code
