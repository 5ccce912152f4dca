"""``ryng-async checkpoint show PATH``: where a load journalled in a checkpoint stands.

Read-only, and safe while the load runs: the campaign and settings of the load, its
batches and leads by state, the first input position not yet accepted, and the batches
that may or may not be in Ryng (in flight or unknown), to check before sending them again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from ..checkpoint import BatchState, CheckpointError, JournalSummary, SQLiteJournal
from ._common import Commands, ExitCode, plain, say

__all__ = ["add_parser"]

_SHOWN_UNCERTAIN = 20


def add_parser(commands: Commands) -> None:
    """Add ``checkpoint show`` to the command line."""
    parser = commands.add_parser(
        "checkpoint", help="inspect a checkpoint journal", description=plain(__doc__)
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="what a journal holds", description=plain(__doc__))
    show.add_argument("path", type=Path, metavar="PATH", help="the checkpoint journal")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(run=run)


def _as_dict(summary: JournalSummary) -> dict[str, object]:
    return {
        "path": summary.path,
        "format_version": summary.format_version,
        "campaign_id": summary.campaign_id,
        "batch_size": summary.batch_size,
        "max_batch_bytes": summary.max_batch_bytes,
        "shard": None if summary.shard is None else list(summary.shard),
        "created_at": summary.created_at.isoformat(),
        "updated_at": summary.updated_at.isoformat(),
        "batches": {state.value: n for state, n in summary.batches.items()},
        "leads": {state.value: n for state, n in summary.leads.items()},
        "maybe_duplicated_leads": summary.maybe_duplicated_leads,
        "next_position": summary.next_position,
        "uncertain": [
            {"index": b.index, "start": b.start, "count": b.count, "state": b.state.value}
            for b in summary.uncertain
        ],
        "size_bytes": summary.size_bytes,
    }


def _text(summary: JournalSummary) -> str:
    shard = "" if summary.shard is None else f", shard {summary.shard[0]} of {summary.shard[1]}"
    lines = [
        f"checkpoint {summary.path} (format {summary.format_version}, "
        f"{summary.size_bytes:,} bytes)",
        f"campaign {summary.campaign_id}: batches of {summary.batch_size} leads, at most "
        f"{summary.max_batch_bytes:,} bytes{shard}",
        f"created {summary.created_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"last written {summary.updated_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"{'state':<10} {'batches':>9} {'leads':>11}",
    ]
    lines.extend(
        f"{state.value:<10} {summary.batches[state]:>9,} {summary.leads[state]:>11,}"
        for state in BatchState
    )
    lines.append(f"{'total':<10} {summary.total_batches:>9,} {summary.total_leads:>11,}")
    lines.append("")
    lines.append(
        f"every lead before input position {summary.next_position:,} was accepted; "
        "running the same load again sends only what was not"
    )
    if summary.maybe_duplicated_leads:
        lines.append(
            f"{summary.maybe_duplicated_leads:,} leads were resent after an ambiguous "
            "attempt and may be in Ryng twice"
        )
    if summary.uncertain:
        lines.append(
            f"{len(summary.uncertain)} batches may or may not be in Ryng (in flight or unknown): "
            "check their leads there before resending them (--resend-unknown)"
        )
        lines.extend(
            f"  batch {b.index}: {b.positions} ({b.state.value})"
            for b in summary.uncertain[:_SHOWN_UNCERTAIN]
        )
        if len(summary.uncertain) > _SHOWN_UNCERTAIN:
            lines.append(f"  ... and {len(summary.uncertain) - _SHOWN_UNCERTAIN} more (--json)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``checkpoint show``; return the exit code."""
    try:
        summary = SQLiteJournal.inspect(args.path)
    except CheckpointError as exc:
        say(f"ryng-async checkpoint show: error: {exc}")
        return ExitCode.USAGE
    if args.json:
        sys.stdout.write(msgspec.json.encode(_as_dict(summary)).decode() + "\n")
    else:
        sys.stdout.write(_text(summary) + "\n")
    return ExitCode.OK
