"""``ryng-async checkpoint show PATH``: where a load journalled in a checkpoint stands.

Read-only, and safe while the load runs: the campaign and settings of the load, its
batches and leads by state, the first input position not yet accepted, and the batches
that may or may not be in Ryng (in flight or unknown), to check before sending them again.
Batches in flight are told apart: sent by a load that holds the journal now, or left by
a run that stopped (unknown: the next run reports them so). A batch sent again in parts
after a 413 may be accepted in part: its accepted leads count as accepted and are named
("accepted in part: leads 0-499"), its state is the rest's. With ``--file`` (the load's
input, read as ``append`` read it), positions are also given as the file's line numbers.

``checkpoint resolve PATH`` records what an operator found of batches left unknown (or in
flight by a run that died): ``--as accepted`` (the leads are in Ryng: the next run counts
them accepted and sends nothing) or ``--as not-received`` (the next run sends them).
``--callbacks STORE`` marks accepted the unknown batches a callback proves reached Ryng.
``checkpoint export PATH --file F --state S -o OUT`` writes the input rows of the batches
in a state, byte for byte as read, header first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from .. import ConfigurationError
from ..checkpoint import (
    BatchState,
    CheckpointError,
    JournalledBatch,
    JournalSummary,
    Resolution,
    SQLiteJournal,
)
from ..checkpoint._records import describe_ranges
from ._common import Commands, ExitCode, add_reading_options, plain, say
from ._readers import InputError, source_from_args

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
    reading = show.add_argument_group("the load's input, for line numbers (as append read it)")
    reading.add_argument("--file", default=None, metavar="FILE", help="the lead file the load read")
    add_reading_options(reading)
    show.set_defaults(run=run)
    from ._resolve import add_actions

    add_actions(actions)


Lines = Callable[[int], int | None]


def _line_map(args: argparse.Namespace, summary: JournalSummary) -> Lines | None:
    """Read the input as far as the journal's positions reach; map a position to its line."""
    if args.file is None:
        return None
    listed = [*summary.uncertain, *summary.accepted_in_part]
    wanted = max([summary.next_position, *(sum(b.ranges[-1]) for b in listed)], default=0)
    source = source_from_args(args)
    try:
        read = 0
        for chunk in source.chunks():
            read += len(chunk)
            if read > wanted:
                break
    finally:
        source.close()
    return source.line_of


def _lines(lines: Lines | None, start: int, count: int) -> tuple[int | None, int | None]:
    if lines is None:
        return None, None
    return lines(start), lines(start + count - 1)


def _state(b: JournalledBatch, holder: int | None) -> str:
    """A batch's state, telling a live load's in-flight batch from a stopped run's."""
    if b.state is not BatchState.IN_FLIGHT:
        return b.state.value
    if holder is None:
        return "in_flight, left by a run that stopped: unknown"
    return f"in_flight now (pid {holder})" if holder else "in_flight now"


def _as_dict(summary: JournalSummary, lines: Lines | None) -> dict[str, object]:
    def batch(b: JournalledBatch) -> dict[str, object]:
        out: dict[str, object] = {
            "index": b.index,
            "start": b.start,
            "count": b.count,
            "ranges": [list(run) for run in b.ranges],
            "state": b.state.value,
            "live": b.state is BatchState.IN_FLIGHT and summary.holder is not None,
            "accepted_ranges": [list(run) for run in b.accepted_ranges],
            "sent_in_parts": b.sent_in_parts,
        }
        if lines is not None:
            spans = [_lines(lines, first, length) for first, length in b.ranges]
            out["first_line"], out["last_line"] = spans[0][0], spans[-1][1]
            out["lines"] = [list(span) for span in spans]
            out["accepted_lines"] = [
                list(_lines(lines, first, length)) for first, length in b.accepted_ranges
            ]
        return out

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
        "next_line": None if lines is None else lines(summary.next_position),
        "uncertain": [batch(b) for b in summary.uncertain],
        "accepted_in_part": [batch(b) for b in summary.accepted_in_part],
        "resolved": [
            {
                "index": r.index,
                "decision": r.decision.value,
                "at": r.at.isoformat(),
                "note": r.note,
                "previous_state": r.previous_state.value,
                "ranges": [list(run) for run in r.ranges],
            }
            for r in summary.resolved
        ],
        "size_bytes": summary.size_bytes,
        "holder": summary.holder,
    }


def _where(runs: Sequence[tuple[int, int]], lines: Lines | None, name: str) -> str:
    positions = "leads " + describe_ranges(runs)
    spans = [_lines(lines, first, length) for first, length in runs]
    if lines is None or any(first is None or last is None for first, last in spans):
        return positions
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)
    return f"{positions}, lines {text} of {name}"


def _listed(b: JournalledBatch, state: str, lines: Lines | None, name: str) -> str:
    """``  batch 3: leads 30-39 (unknown)``, and the runs it accepted in part if any."""
    part = ""
    if b.accepted_ranges:
        part = f"; accepted in part: {_where(b.accepted_ranges, lines, name)}"
    return f"  batch {b.index}: {_where(b.ranges, lines, name)} ({state}{part})"


def _batch_lines(
    batches: Sequence[JournalledBatch], holder: int | None, lines: Lines | None, name: str
) -> list[str]:
    """The first few ``batches`` a line each (`_listed`), then how many more there are."""
    out = [_listed(b, _state(b, holder), lines, name) for b in batches[:_SHOWN_UNCERTAIN]]
    if len(batches) > _SHOWN_UNCERTAIN:
        out.append(f"  ... and {len(batches) - _SHOWN_UNCERTAIN} more (--json)")
    return out


def _text(summary: JournalSummary, lines: Lines | None, name: str) -> str:
    shard = "" if summary.shard is None else f", shard {summary.shard[0]} of {summary.shard[1]}"
    out = [
        f"checkpoint {summary.path} (format {summary.format_version}, "
        f"{summary.size_bytes:,} bytes)",
        f"campaign {summary.campaign_id}: batches of {summary.batch_size} leads, at most "
        f"{summary.max_batch_bytes:,} bytes{shard}",
        f"created {summary.created_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"last written {summary.updated_at:%Y-%m-%d %H:%M:%S} UTC",
        "no load holds it now"
        if summary.holder is None
        else f"a load holds it now{f' (pid {summary.holder})' if summary.holder else ''}",
        "",
        f"{'state':<10} {'batches':>9} {'leads':>11}",
    ]
    out.extend(
        f"{state.value:<10} {summary.batches[state]:>9,} {summary.leads[state]:>11,}"
        for state in BatchState
    )
    out.append(f"{'total':<10} {summary.total_batches:>9,} {summary.total_leads:>11,}")
    out.append("")
    next_line = None if lines is None else lines(summary.next_position)
    at_line = "" if next_line is None else f" (line {next_line} of {name})"
    out.append(
        f"every lead before input position {summary.next_position:,}{at_line} was accepted; "
        "running the same load again sends only what was not"
    )
    if summary.maybe_duplicated_leads:
        out.append(
            f"{summary.maybe_duplicated_leads:,} leads were resent after an ambiguous "
            "attempt and may be in Ryng twice"
        )
    if summary.uncertain:
        out.append(
            f"{len(summary.uncertain)} batches may or may not be in Ryng (in flight or unknown): "
            "check their leads there, then record what you found: checkpoint resolve "
            "--as accepted|not-received (or --callbacks STORE); checkpoint export --state "
            "unknown writes their rows"
        )
        out.extend(_batch_lines(summary.uncertain, summary.holder, lines, name))
    if summary.accepted_in_part:
        out.append(
            f"{len(summary.accepted_in_part)} batches were accepted in part (sent in parts after "
            "a 413): those leads count as accepted and are not sent again; the rest of each "
            "is in its state"
        )
        out.extend(_batch_lines(summary.accepted_in_part, summary.holder, lines, name))
    if summary.resolved:
        out.append(f"{len(summary.resolved)} decisions recorded on unknown batches (resolved):")
        out.extend(_resolution(r) for r in summary.resolved[:_SHOWN_UNCERTAIN])
        if len(summary.resolved) > _SHOWN_UNCERTAIN:
            out.append(f"  ... and {len(summary.resolved) - _SHOWN_UNCERTAIN} more (--json)")
    return "\n".join(out)


def _resolution(r: Resolution) -> str:
    note = f": {r.note}" if r.note else ""
    return (
        f"  batch {r.index}: {r.positions} ({r.previous_state.value}) resolved as "
        f"{r.decision.value} at {r.at:%Y-%m-%d %H:%M:%S} UTC{note}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``checkpoint show``; return the exit code."""
    try:
        summary = SQLiteJournal.inspect(args.path)
        lines = _line_map(args, summary)
    except (ConfigurationError, InputError, OSError) as exc:  # a journal refused included
        say(f"ryng-async checkpoint show: error: {exc}")
        return ExitCode.USAGE
    except CheckpointError as exc:  # the journal failed while read: a ResourceError
        say(f"ryng-async checkpoint show: error: {exc}")
        return ExitCode.RESOURCE
    if args.json:
        sys.stdout.write(msgspec.json.encode(_as_dict(summary, lines)).decode() + "\n")
    else:
        sys.stdout.write(_text(summary, lines, str(args.file)) + "\n")
    return ExitCode.OK
