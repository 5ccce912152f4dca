"""Progress of a load for people and for log collectors, and the summary at its end.

The load's ``on_progress`` hook only stores the latest `Progress` (it runs after every
batch, on the event loop); a view draws from it on its own clock: a live rich bar on a
terminal, refreshed a few times a second, or one log line every few seconds elsewhere
(text, or JSON for log collectors). Rates and the time left come from what was settled
over the last few seconds, and from the bytes read when the input's size is known.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import anyio

from .. import BatchResult, BulkReport, Outcome, Progress
from ._common import say

__all__ = [
    "Meter",
    "Snapshot",
    "View",
    "json_logging",
    "make_view",
    "summary_table",
    "text_warnings",
]

_WINDOW = 5.0  # seconds of history behind the rate shown


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a view shows at one moment."""

    read: int
    accepted: int
    failed: int
    unknown: int
    skipped: int
    invalid: int
    rate: float
    """Leads settled per second over the last few seconds."""
    fraction: float | None
    """Share of the input read (bytes, else rows), when its size is known."""
    eta: float | None
    """Seconds left, when it can be told."""
    elapsed: float

    @property
    def settled(self) -> int:
        """Leads with an outcome."""
        return self.accepted + self.failed + self.unknown + self.skipped + self.invalid

    def to_dict(self) -> dict[str, Any]:
        """As JSON-able values."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "failed": self.failed,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "leads_per_second": round(self.rate, 1),
            "fraction_read": None if self.fraction is None else round(self.fraction, 4),
            "eta_seconds": None if self.eta is None else round(self.eta, 1),
            "elapsed": round(self.elapsed, 2),
        }


class Meter:
    """Collects a load's progress: pass `update` as ``on_progress``.

    Args:
        total_rows: the input's length in leads, when known.
        total_bytes: the input's size in bytes, when known.
        bytes_read: how many bytes were read so far (for ``total_bytes``).
        rows_read: how many rows were read so far, if the reader knows better than the
            load (it reads ahead of what the load has taken).
    """

    def __init__(
        self,
        *,
        total_rows: int | None = None,
        total_bytes: int | None = None,
        bytes_read: Callable[[], int | None] | None = None,
        rows_read: Callable[[], int] | None = None,
    ) -> None:
        self.total_rows = total_rows
        self.total_bytes = total_bytes
        self._bytes_read = bytes_read
        self._rows_read = rows_read
        self._latest: Progress | None = None
        self.stopping = False
        """A signal stopped the load: it waits for the requests in flight."""
        self._started = time.monotonic()
        self._history: deque[tuple[float, int]] = deque([(self._started, 0)])

    def update(self, progress: Progress) -> None:
        """Store the latest progress (the load's ``on_progress`` hook)."""
        self._latest = progress

    def snapshot(self) -> Snapshot:
        """What the load stands at now."""
        now = time.monotonic()
        p = self._latest
        read = p.read if p is not None else 0
        if self._rows_read is not None:
            read = max(read, self._rows_read())
        counts = (
            (p.accepted, p.failed, p.unknown, p.skipped, p.invalid)
            if p is not None
            else (0, 0, 0, 0, 0)
        )
        settled = sum(counts)
        history = self._history
        history.append((now, settled))
        while len(history) > 2 and now - history[1][0] >= _WINDOW:
            history.popleft()
        first_time, first_settled = history[0]
        span = now - first_time
        rate = (settled - first_settled) / span if span > 0 else 0.0
        fraction = self._fraction(read)
        elapsed = now - self._started
        eta = None
        if fraction is not None and 0 < fraction < 1 and elapsed > 1:
            eta = elapsed * (1 - fraction) / fraction
        elif fraction is not None and fraction >= 1 and self.total_rows is not None and rate > 0:
            eta = max(self.total_rows - settled, 0) / rate
        return Snapshot(read, *counts, rate=rate, fraction=fraction, eta=eta, elapsed=elapsed)

    def _fraction(self, read: int) -> float | None:
        if self.total_bytes and self._bytes_read is not None:
            done = self._bytes_read()
            if done is not None:
                return min(done / self.total_bytes, 1.0)
        if self.total_rows:
            return min(read / self.total_rows, 1.0)
        return None


class View(Protocol):
    """Draws a `Meter` on its own clock."""

    period: float

    def start(self) -> None:
        """Show the view."""

    def refresh(self) -> None:
        """Draw the meter's state now."""

    def stop(self) -> None:
        """Draw the last state and release the terminal."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _counts(s: Snapshot) -> str:
    return (
        f"accepted {s.accepted:,}  failed {s.failed:,}  unknown {s.unknown:,}  "
        f"invalid {s.invalid:,}"
    )


class _NullView:
    period = 3600.0

    def start(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _LogView:
    """One line every ``period`` seconds, text or JSON, and one at the end."""

    def __init__(self, meter: Meter, stream: TextIO, period: float, as_json: bool) -> None:
        self.meter = meter
        self.stream = stream
        self.period = period
        self.as_json = as_json

    def start(self) -> None:
        pass

    def refresh(self) -> None:
        s = self.meter.snapshot()
        stopping = self.meter.stopping
        if self.as_json:
            extra = {"stopping": True} if stopping else {}
            line = json.dumps({"event": "progress", **s.to_dict(), **extra})
        else:
            share = "" if s.fraction is None else f" ({s.fraction:.0%})"
            eta = "" if s.eta is None or stopping else f", {_duration(s.eta)} left"
            label = "stopping, waiting for the requests in flight" if stopping else "progress"
            line = f"{label}: read {s.read:,}{share}  {_counts(s)}  {s.rate:,.0f} leads/s{eta}"
        self.stream.write(line + "\n")
        self.stream.flush()

    def stop(self) -> None:
        self.refresh()


class _BarView:
    """A live rich bar on a terminal."""

    period = 0.25

    def __init__(self, meter: Meter, stream: TextIO, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.meter = meter
        self._label = label
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[read]}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=Console(file=stream),
            auto_refresh=False,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None, read="", counts="", rate="", eta="")

    def start(self) -> None:
        self._progress.start()
        self.refresh()

    def refresh(self) -> None:
        s = self.meter.snapshot()
        total_rows = self.meter.total_rows
        of = f" of {total_rows:,}" if total_rows else ""
        self._progress.update(
            self._task,
            description="stopping, waiting for the requests in flight"
            if self.meter.stopping
            else self._label,
            total=None if s.fraction is None else 1.0,
            completed=s.fraction or 0.0,
            read=f"{s.read:,}{of} read",
            counts=_counts(s),
            rate=f"{s.rate:,.0f}/s",
            eta="" if s.eta is None else f"{_duration(s.eta)} left",
        )
        self._progress.refresh()

    def stop(self) -> None:
        self.refresh()
        self._progress.stop()


def make_view(
    meter: Meter,
    *,
    mode: str,
    log_format: str,
    interval: float,
    label: str = "loading",
    stream: TextIO | None = None,
) -> View:
    """Pick the view: ``mode`` is ``"auto"``, ``"bar"``, ``"log"`` or ``"none"``.

    ``auto`` draws a bar when the stream is a terminal (and rich is installed, and the
    log format is text), else logs a line every ``interval`` seconds.
    """
    out = stream if stream is not None else sys.stderr
    if mode == "none":
        return _NullView()
    if mode in {"auto", "bar"} and log_format == "text":
        wants_bar = mode == "bar" or out.isatty()
        if wants_bar:
            with contextlib.suppress(ImportError):
                return _BarView(meter, out, label)
    return _LogView(meter, out, interval, log_format == "json")


async def tick(view: View) -> None:
    """Refresh ``view`` on its clock until cancelled."""
    while True:
        await anyio.sleep(view.period)
        view.refresh()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "event": "log",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info is not None and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["error"] = f"{type(error).__name__}: {error}"
        return json.dumps(line)


@contextlib.contextmanager
def json_logging(*, enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """While open, the SDK's log records (warnings and up) go out as JSON lines.

    The package's logger has a `logging.NullHandler`, so without it they would be said
    nowhere (`text_warnings` is the plain-text side). Does nothing unless ``enabled``.
    """
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_JsonFormatter())
    with _handling_sdk_logs(handler):
        yield


class _SayHandler(logging.Handler):
    def filter(self, record: logging.LogRecord) -> bool:
        # Why a load stopped is in the summary (and the error line): said once.
        return not getattr(record, "ryng_load_stop", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            say(self.format(record))
        except Exception:  # logging's own rule: a handler never raises
            self.handleError(record)


@contextlib.contextmanager
def text_warnings(*, enabled: bool) -> Iterator[None]:
    """While open, the SDK's warnings go to standard error as ``ryng-async append: warning:``.

    The package's logger has a `logging.NullHandler` (a library's manners), so without
    this a lost Redis, a fallback, an exhausted retry budget or a grace that ran out would
    be said nowhere in text mode. Does nothing unless ``enabled``.
    """
    if not enabled:
        yield
        return
    handler = _SayHandler(logging.WARNING)
    handler.setFormatter(logging.Formatter("ryng-async append: warning: %(message)s"))
    with _handling_sdk_logs(handler):
        yield


@contextlib.contextmanager
def _handling_sdk_logs(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger("ryng_async")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


_REASONS_SHOWN = 5


def _why(result: BatchResult) -> str:
    """Why a batch was not accepted, in a few words: its outcome, status or error, message."""
    if result.status is not None:
        cause = f"HTTP {result.status}"
    elif result.error is not None:
        cause = type(result.error).__name__
    else:
        cause = "no answer"
    message = result.message if len(result.message) <= 80 else result.message[:77] + "..."
    return f"{result.outcome.value}: {cause}: {message}"


def summary_table(report: BulkReport, *, extra: dict[str, str] | None = None) -> str:
    """The end-of-load table: leads by outcome, with what each outcome means."""
    rows = [
        ("read", report.total, ""),
        ("accepted", report.accepted, "appended to the campaign"),
        ("failed", report.failed, "not appended (a definite error): safe to send again"),
        ("unknown", report.unknown, "may have been appended: check before sending again"),
        ("skipped", report.skipped, "never sent"),
        ("invalid", report.invalid, "refused before sending"),
    ]
    width = max(len(f"{count:,}") for _, count, _ in rows)
    lines = []
    for name, count, meaning in rows:
        note = f"  {meaning}" if count and meaning else ""
        lines.append(f"  {name:<9}{count:>{width},}{note}")
    batches = len(report.batches)
    lines.append(
        f"  {batches:,} batches in {report.elapsed:.1f}s, {report.leads_per_second:,.0f} "
        "leads/s accepted"
    )
    if report.resumed:
        lines.append(f"  {report.resumed:,} leads resumed from the checkpoint, not sent again")
    if report.maybe_duplicated:
        lines.append(
            f"  {report.maybe_duplicated:,} accepted leads were resent after an ambiguous "
            "attempt and may be in Ryng twice"
        )
    reasons = Counter(
        _why(result)
        for result in report.batches
        if result.outcome in {Outcome.FAILED, Outcome.UNKNOWN} and not result.resumed
    )
    for why, count in reasons.most_common(_REASONS_SHOWN):
        lines.append(f"  {count:,} {'batch' if count == 1 else 'batches'} {why}")
    if len(reasons) > _REASONS_SHOWN:
        lines.append(f"  ... and {len(reasons) - _REASONS_SHOWN} more reasons (--report)")
    if report.body_refused is not None:
        lines.append(f"  {report.body_limit_note()} (--max-batch-bytes)")
    if report.stopped_early:
        lines.append(f"  stopped early: {report.stop_reason}")
    for key, value in (extra or {}).items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
