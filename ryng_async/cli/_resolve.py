"""``checkpoint resolve`` and ``checkpoint export``: what to do with batches left unknown.

A batch is unknown when its request may or may not have been appended (the answer was
lost, or the run died while it was in flight). ``resolve`` records what an operator found
(``--as accepted``: its leads are in Ryng; ``--as not-received``: they are not), or lets the
callback store prove it (``--callbacks``). ``export`` writes the input rows of the batches
in a state, byte for byte as read, to look up in the console or to load again.

Proof from callbacks rests on the vendor's contract that a request is appended whole or not
at all: one lead of a batch called proves the whole batch was appended. A callback proves
a lead when its customer number is that lead's number, the number is the lead's alone in
the file, and the call was created after the journal was (after the load began). What
would break it: a vendor that appends part of a request; the same number loaded into the
campaign by another load or by hand since (its callback then proves nothing of this
batch); a callback store fed by several campaigns' numbers.

A batch sent again in parts after a 413 may be accepted in part. Its accepted leads are
settled: ``resolve`` decides the rest (``--as not-received`` keeps those leads accepted,
so the next run sends only the rest), ``export`` writes only the rest, and callbacks
resolve none of it (a call proves its own part, not the others), nor any batch a run ever
sent in parts, whatever a later run recorded of it.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

from .. import ConfigurationError
from ..checkpoint import BatchState, CheckpointError, Decision, JournalledBatch, SQLiteJournal
from ..checkpoint._records import describe_ranges
from ._common import Commands, ExitCode, add_reading_options, plain, say
from ._readers import InputError, LeadSource, source_from_args

__all__ = ["add_actions", "copy_rows", "export_rows"]

T = TypeVar("T")

_OPEN = frozenset({BatchState.IN_FLIGHT, BatchState.UNKNOWN})
_EXPORT_STATES = {
    "unknown": _OPEN,
    "failed": frozenset({BatchState.FAILED}),
    "skipped": frozenset({BatchState.SKIPPED}),
    "not-accepted": frozenset(BatchState) - {BatchState.ACCEPTED},
}


def _intervals(text: str) -> list[tuple[int, int]]:
    """``"3,5-7"`` -> ``[(3, 3), (5, 7)]`` (inclusive)."""
    out = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers or ranges like 3,5-7, got {text!r}"
            ) from None
        if low < 0 or high < low:
            raise argparse.ArgumentTypeError(f"bad range {part.strip()!r} in {text!r}")
        out.append((low, high))
    return out


def add_actions(actions: Commands) -> None:
    """Add ``checkpoint resolve`` and ``checkpoint export``."""
    resolve = actions.add_parser(
        "resolve", help="record what became of unknown batches", description=plain(__doc__)
    )
    resolve.add_argument("path", type=Path, metavar="PATH", help="the checkpoint journal")
    resolve.add_argument(
        "--as",
        dest="decision",
        choices=[d.value for d in Decision],
        default=None,
        help="accepted: found in Ryng (the next run sends nothing of them); not-received: "
        "not in Ryng (the next run sends them)",
    )
    resolve.add_argument(
        "--callbacks",
        type=Path,
        default=None,
        metavar="STORE",
        help="the callback receiver's store: mark accepted each unknown batch one of whose "
        "leads was called after the load began (needs --file); the rest stay unknown",
    )
    chosen = resolve.add_argument_group("which unknown batches (one of; with --callbacks: all)")
    chosen.add_argument("--all", action="store_true", help="every batch in flight or unknown")
    chosen.add_argument(
        "--batch", type=_intervals, default=None, metavar="LIST", help="indexes, e.g. 3,5-7"
    )
    chosen.add_argument(
        "--positions",
        type=_intervals,
        default=None,
        metavar="LIST",
        help="batches holding a lead at these input positions (from 0), e.g. 1000-1999",
    )
    chosen.add_argument(
        "--lines",
        type=_intervals,
        default=None,
        metavar="LIST",
        help="batches holding a row on these lines of --file, e.g. 2-501",
    )
    resolve.add_argument("--note", default="", help="why (kept in the journal)")
    reading = resolve.add_argument_group("the load's input (as append read it)")
    reading.add_argument("--file", default=None, metavar="FILE", help="the lead file the load read")
    add_reading_options(reading)
    resolve.set_defaults(run=run_resolve)

    export = actions.add_parser(
        "export",
        help="write the input rows of batches in a state",
        description=plain(__doc__),
    )
    export.add_argument("path", type=Path, metavar="PATH", help="the checkpoint journal")
    export.add_argument("--state", required=True, choices=sorted(_EXPORT_STATES))
    export.add_argument(
        "-o", "--out", required=True, metavar="OUT", help="the file to write ('-': stdout)"
    )
    reading = export.add_argument_group("the load's input (as append read it)")
    reading.add_argument(
        "--file", required=True, metavar="FILE", help="the lead file the load read (not stdin)"
    )
    add_reading_options(reading)
    export.set_defaults(run=run_export)


# --- reading the input -------------------------------------------------------------------


def _read_input(
    args: argparse.Namespace, upto: int, keep: Callable[[int, str], None] | None = None
) -> LeadSource:
    """Read the input past position ``upto`` (all of it: -1), showing ``keep`` each number."""
    if args.file == "-":
        raise InputError("the input is read twice here: give a file, not stdin ('-')")
    source = source_from_args(args)
    try:
        position = 0
        for chunk in source.chunks():
            for lead in chunk:
                if keep is not None and isinstance(lead, dict):
                    number = lead.get("number")
                    if isinstance(number, str | int):
                        keep(position, str(number))
                position += 1
            if 0 <= upto < position:
                break
    finally:
        source.close()
    return source


def _positions(batches: Iterable[JournalledBatch]) -> Iterator[int]:
    """The positions of the batches' leads but those they accepted in part."""
    for b in batches:
        for first, length in b.open_ranges:
            yield from range(first, first + length)


# --- resolve -----------------------------------------------------------------------------


def _select(
    args: argparse.Namespace, uncertain: list[JournalledBatch], source: LeadSource | None
) -> list[JournalledBatch]:
    ways = [args.all, args.batch is not None, args.positions is not None, args.lines is not None]
    if sum(ways) > 1:
        raise InputError("choose the batches one way: --all, --batch, --positions or --lines")
    if args.batch is not None:
        wanted = args.batch
        return [b for b in uncertain if any(lo <= b.index <= hi for lo, hi in wanted)]
    if args.positions is not None or args.lines is not None:
        spans = args.positions if args.positions is not None else args.lines

        def hits(b: JournalledBatch) -> bool:
            # Its leads accepted in part are decided: naming them chooses nothing.
            for first, length in b.open_ranges:
                low, high = first, first + length - 1
                if args.lines is not None:
                    assert source is not None  # noqa: S101 - checked by the caller
                    low, high = source.line_of(low) or -1, source.line_of(high) or -1
                if any(lo <= high and low <= hi for lo, hi in spans):
                    return True
            return False

        return [b for b in uncertain if hits(b)]
    return list(uncertain)


def _sent_in_parts(b: JournalledBatch) -> bool:
    """Whether the batch was ever sent in parts after a 413 (a call then proves one part).

    The journal's sticky flag, set as a part goes out (so a run killed then is covered)
    and kept by every later record of the batch, whatever its message says. A journal
    migrated from format 4 has it wherever format 4's message said "parts after a 413".
    """
    return b.sent_in_parts


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _proven(
    args: argparse.Namespace, candidates: list[JournalledBatch], since: datetime
) -> tuple[dict[int, str], int]:
    """Batches a callback proves reached Ryng (index -> the proof), and callbacks read.

    Reads the input twice: for the numbers of the candidates' leads, then for how often
    each occurs in the whole file (a number loaded twice proves neither lead).
    """
    # Imported here: the callbacks package brings aiohttp.web, which the command's other
    # uses do not need.
    from ..callbacks._sqlite_store import open_for_reading

    store: Path = args.callbacks
    # The store's own header check, before the input is read: a foreign file or a
    # checkpoint journal is refused, named.
    conn = open_for_reading(store)
    try:
        return _proofs(args, conn, candidates, since)
    except sqlite3.Error as exc:
        raise InputError(f"cannot read the callback store {store}: {exc}") from exc
    finally:
        conn.close()


def _proofs(
    args: argparse.Namespace,
    conn: sqlite3.Connection,
    candidates: list[JournalledBatch],
    since: datetime,
) -> tuple[dict[int, str], int]:
    from ..callbacks._stored import stored_callback  # the store's own parsing (see _proven)

    batch_of = {position: b.index for b in candidates for position in _positions([b])}
    owner: dict[str, int] = {}

    def note_candidate(position: int, number: str) -> None:
        index = batch_of.get(position)
        key = _digits(number)
        if index is not None and key:
            owner[key] = index

    _read_input(args, max(batch_of, default=0), note_candidate)
    counts: dict[str, int] = dict.fromkeys(owner, 0)

    def count(_: int, number: str) -> None:
        key = _digits(number)
        if key in counts:
            counts[key] += 1

    _read_input(args, -1, count)
    owner = {key: index for key, index in owner.items() if counts[key] == 1}
    proofs: dict[int, str] = {}
    read = 0
    rows = conn.execute(
        "SELECT call_id, customer_num, received_at, raw FROM callbacks ORDER BY seq"
    )
    for call_id, customer, received, raw in rows:
        read += 1
        key = _digits(customer or "")
        index = owner.get(key)
        if index is None or index in proofs:
            continue
        event = stored_callback(0, received, raw).event
        when = event.call_created or datetime.fromisoformat(received)
        if when >= since:
            proofs[index] = f"callback of call {call_id} to {customer} at {when.isoformat()}"
    return proofs, read


def run_resolve(args: argparse.Namespace) -> int:
    """Run ``checkpoint resolve``; return the exit code."""
    name = "ryng-async checkpoint resolve"
    if (args.decision is None) == (args.callbacks is None):
        say(f"{name}: error: give --as accepted|not-received, or --callbacks STORE")
        return ExitCode.USAGE
    if args.callbacks is not None and args.decision is None and args.file is None:
        say(f"{name}: error: --callbacks needs --file (the load's input, for the numbers)")
        return ExitCode.USAGE
    if args.lines is not None and args.file is None:
        say(f"{name}: error: --lines needs --file (the load's input)")
        return ExitCode.USAGE
    if args.callbacks is None and not (
        args.all or args.batch is not None or args.positions is not None or args.lines
    ):
        say(f"{name}: error: choose the batches: --all, --batch, --positions or --lines")
        return ExitCode.USAGE
    try:
        summary = SQLiteJournal.inspect(args.path)
        uncertain = list(summary.uncertain)
        source = None
        if args.lines is not None:
            upto = max((sum(b.ranges[-1]) for b in uncertain), default=0)
            source = _read_input(args, upto)
        chosen = _select(args, uncertain, source)
        in_parts: list[JournalledBatch] = []
        if args.callbacks is not None:
            # Sent in parts after a 413: a call proves its own part, not the rest.
            in_parts = [b for b in chosen if _sent_in_parts(b)]
            chosen = [b for b in chosen if not _sent_in_parts(b)]
            for b in in_parts:
                part = (
                    f" (accepted in part: leads {describe_ranges(b.accepted_ranges)})"
                    if b.accepted_ranges
                    else ""
                )
                sys.stdout.write(
                    f"batch {b.index}: {b.positions} was sent in parts after a 413{part}: a "
                    "callback proves only its own part; check the rest and resolve it with "
                    "--as\n"
                )
            proofs, read = _proven(args, chosen, summary.created_at)
            chosen = [b for b in chosen if b.index in proofs]
            decision = Decision.ACCEPTED
        else:
            proofs, read = {}, 0
            decision = Decision(args.decision)
        if not chosen:
            if args.callbacks is not None:
                sys.stdout.write(
                    f"no unknown batch is proven by the {read:,} callbacks of "
                    f"{args.callbacks}; {len(uncertain)} stay unknown\n"
                )
                return ExitCode.OK if not uncertain else ExitCode.NOT_ALL_ACCEPTED
            say(f"{name}: error: no batch in flight or unknown matches the selection")
            return ExitCode.USAGE
        if proofs:
            made = []
            for b in chosen:  # each with its own proof
                note = f"{proofs[b.index]}{'; ' + args.note if args.note else ''}"
                made.extend(
                    SQLiteJournal.resolve(args.path, decision, batches=[b.index], note=note)
                )
        else:
            made = SQLiteJournal.resolve(
                args.path, decision, batches=[b.index for b in chosen], note=args.note
            )
    except (ConfigurationError, InputError, OSError) as exc:  # a journal refused included
        say(f"{name}: error: {exc}")
        return ExitCode.USAGE
    except CheckpointError as exc:  # the journal failed while written: a ResourceError
        say(f"{name}: error: {exc}")
        return ExitCode.RESOURCE
    left = len(uncertain) - len(made)
    lines = [
        f"batch {r.index}: {r.positions} resolved as {r.decision.value}"
        + (f" ({r.note})" if r.note else "")
        for r in made
    ]
    lines.append(
        f"{len(made)} batches ({sum(c for r in made for _, c in r.ranges):,} leads) resolved as "
        f"{decision.value}; {left} batches still unknown"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return ExitCode.OK if left == 0 else ExitCode.NOT_ALL_ACCEPTED


# --- export ------------------------------------------------------------------------------


def _open_bytes(path: str) -> IO[bytes]:
    handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if handle.read(2) == b"\x1f\x8b":
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _write_heading(
    heading: list[bytes], header: Callable[[bytes], bytes] | None, out: IO[bytes]
) -> int:
    while heading and _is_blank(heading[-1]):
        heading.pop()
    if heading and header is not None:
        heading[-1] = header(heading[-1])
    out.writelines(heading)
    return len(heading)


def export_rows(
    args: argparse.Namespace, batches: list[JournalledBatch], out: IO[bytes]
) -> tuple[int, int]:
    """Write the header and the rows at the batches' positions; return (rows, lines) written.

    A row spans the lines from the one it starts on to the line before the next row's
    (blank lines between rows are left out), so a quoted cell holding line breaks is
    written whole.
    """
    wanted = sorted(set(_positions(batches)))
    source = _read_input(args, (wanted[-1] + 1) if wanted else 0)
    return copy_rows(args.file, source, ((p, None) for p in wanted), out)


Edit = Callable[[bytes, T], bytes]


def copy_rows(
    path: str,
    source: LeadSource,
    wanted: Iterable[tuple[int, T]],
    out: IO[bytes],
    *,
    header: Callable[[bytes], bytes] | None = None,
    row: Edit[T] | None = None,
) -> tuple[int, int]:
    """Copy the rows at ``wanted``'s positions (ascending) from ``path``, header first.

    ``source`` is ``path`` as read (to its end, or past the last position wanted): it maps
    positions to lines. ``header`` edits the header's line, ``row`` a row's last line
    (with its item's tag). Streams: holds one row's lines at a time. Returns (rows, lines)
    written.
    """
    wanted = iter(wanted)
    header_end = source.line_of(0) if source.format == "csv" else None
    rows = written = 0
    heading: list[bytes] = []

    def next_row() -> tuple[int, int, T] | None:
        item = next(wanted, None)
        if item is None:
            return None
        position, tag = item
        first = source.line_of(position)
        if first is None:
            raise InputError(f"{path}: no row at input position {position}")
        following = source.line_of(position + 1) if position + 1 < source.rows else None
        return first, following or 0, tag

    def flush(lines: list[bytes], tag: T) -> int:
        while lines and _is_blank(lines[-1]):
            lines.pop()
        if lines and row is not None:
            lines[-1] = row(lines[-1], tag)
        out.writelines(lines)
        return len(lines)

    current = next_row()
    with _open_bytes(path) as handle:
        pending: list[bytes] = []  # the current row's lines, blank ones held back
        inside: tuple[int, T] | None = None  # (the line the row ends before or 0, its tag)
        for number, line in enumerate(handle, start=1):
            if header_end is not None and number < header_end:
                if number > source.skipped_lines:  # not a title line --skip-rows skipped
                    heading.append(line)
                continue
            if heading:
                written += _write_heading(heading, header, out)
                heading = []
            if inside is not None and (number < inside[0] or not inside[0]):
                pending.append(line)
                continue
            if inside is not None:
                written += flush(pending, inside[1])
                pending, inside = [], None
            if current is not None and number == current[0]:
                pending = [line]
                inside = (current[1], current[2])
                rows += 1
                current = next_row()
            elif current is None:
                break
        if inside is not None:
            written += flush(pending, inside[1])
        written += _write_heading(heading, header, out)  # a file of a header, no rows
    if current is not None:
        raise InputError(f"{path}: a row was not found again at line {current[0]}")
    return rows, written


def run_export(args: argparse.Namespace) -> int:
    """Run ``checkpoint export``; return the exit code."""
    name = "ryng-async checkpoint export"
    try:
        batches = SQLiteJournal.read_batches(args.path, states=_EXPORT_STATES[args.state])
        if args.out == "-":
            rows, _ = export_rows(args, batches, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(args.out, "wb") as out:
                rows, _ = export_rows(args, batches, out)
    except (ConfigurationError, InputError, OSError) as exc:  # a journal refused included
        say(f"{name}: error: {exc}")
        return ExitCode.USAGE
    except CheckpointError as exc:  # the journal failed while read: a ResourceError
        say(f"{name}: error: {exc}")
        return ExitCode.RESOURCE
    where = "stdout" if args.out == "-" else args.out
    say(f"{rows:,} rows of {len(batches):,} {args.state} batches written to {where}")
    return ExitCode.OK
