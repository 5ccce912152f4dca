"""``append --dry-run``: read and check every row as a load would, send nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .._batching import BodyTemplate, Packer
from .._intake import Intake
from .._seen import SeenNumbers
from .._validate import build_request
from ._append_options import (
    InvalidGuard,
    campaign_options,
    check_rejects,
    check_report_path,
    open_lead_file,
)
from ._append_output import InvalidRows, tell, write_report
from ._common import ExitCode
from ._readers import LeadSource

__all__ = ["dry_run"]


def dry_run(args: argparse.Namespace) -> int:
    check_report_path(args.report)
    check_rejects(args)
    as_json = args.log_format == "json"
    source = open_lead_file(args)
    rows = InvalidRows(source, listing=sys.stdout, keep=0, report=args.report, rejects=args.rejects)
    try:
        intake: Intake | None = None
        try:
            intake = _intake(args, source)
            position = 0
            guard = None
            if args.max_invalid is not None:
                guard = rows.guard = InvalidGuard(args.max_invalid, asyncio.Event())
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
            tell(as_json, "max_invalid", f"ryng-async append: stopped: {rows.guard.tripped}")
        code = ExitCode.NOT_ALL_ACCEPTED if rows.count else ExitCode.OK
        valid = position - rows.count
        tell(
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
            write_report(args.report, document, rows)
        rows.write_rejects(args)
        return code
    finally:
        rows.close()


def _intake(args: argparse.Namespace, source: LeadSource) -> Intake:
    """The load's intake, to check rows as a load would: validation, dedupe, size.

    A duplicate's reason is the dry run's own: "duplicate of an earlier lead" (a load
    says "... in this load").
    """
    template = BodyTemplate(build_request(**campaign_options(args, source)))
    return Intake(
        (),
        packer=Packer(template, args.batch_size, args.max_batch_bytes),
        batch_size=args.batch_size,
        seen=SeenNumbers() if args.dedupe else None,
        duplicate_reason="duplicate of an earlier lead",
    )
