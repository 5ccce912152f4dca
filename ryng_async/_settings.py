"""A load's settings: every option of `BulkOptions` checked once, its defaults applied.

`load_settings` reads the options in one place and returns a frozen `LoadSettings`; the
load's parts (intake, ledger, resume, senders) read it and never parse an option again.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import anyio
from yarl import URL

from ._batching import BodyTemplate
from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_KEEP_FAILED_LEADS,
    DEFAULT_KEEP_INVALID_LEADS,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TIMEOUT,
)
from ._events import LoadObserver, Observers, ProgressHook, check_observers, on_progress_observer
from ._exceptions import ConfigurationError
from ._models import CampaignOptions, Lead
from ._ratelimit import AdaptiveLimiter, Limiter
from ._report import BulkReport, InvalidLead
from ._sender import Sender
from ._validate import (
    CAMPAIGN_OPTION_NAMES,
    build_request,
    check_int,
    check_limiter,
    check_rate,
    check_shard,
)
from .checkpoint import LoadIdentity, SQLiteJournal

__all__ = ["BulkOptions", "LoadSettings", "StopEvent", "check_grace", "load_settings"]


class BulkOptions(CampaignOptions, total=False):
    """The keyword options of `RyngClient.bulk_append` and `RyngClient.stream_append`.

    Keys:
        batch_size: most leads per request (default 500).
        max_batch_bytes: most bytes per request body (default 4 MiB); a lead that cannot
            fit alone is invalid.
        concurrency: most requests in flight (default 8).
        rate_limit: requests per second for this load; None (default) uses the client's
            limiter.
        limiter: any `Limiter` for this load instead of the client's (not with
            ``rate_limit``).
        observers: callables given every load event (`BatchPacked`, `AttemptStarting`,
            `AttemptEnded`, `RetryDetails`, `BatchSettled`, `LoadEnded`), after the
            client's own; an awaitable one returns is awaited before the load goes on.
        checkpoint: a path to an SQLite journal (made if missing) or an `SQLiteJournal`:
            the load becomes resumable. Run the same load again with the same checkpoint
            and batches accepted before are not sent again (reported accepted and
            resumed); see the README's "Resuming a load".
        resend_unknown: with a checkpoint, send again the batches that were in flight
            when an earlier run stopped (they may already be in Ryng: off by default).
        shard: ``(index, count)``: this worker reads the whole input but validates and
            sends only its share: the blocks of ``batch_size`` input positions whose
            number modulo ``count`` is ``index``. The ``count`` shards together send the
            input exactly once; ``BulkReport.merge`` joins their reports.
        on_progress: a plain callable given a `Progress` after every batch.
        dedupe: refuse a lead whose number was already sent in this load, as invalid.
            Exact in bounded memory: past 50,000 numbers they go to a temporary SQLite
            file in the system's temp directory (11 to 20 bytes a number), removed when
            the load ends.
        default_region: normalize national numbers (``09876543210``, ``98765 43210``) to
            E.164 with libphonenumber's rules for this region (``"IN"``; the ``phone``
            extra); a number it calls invalid is an invalid lead with its reason.
        max_consecutive_failures: stop the load after this many batches in a row end
            failed or unknown (default 20; a 413 sent again in parts is none); None never
            stops.
        keep_failed_leads: most leads of batches not accepted the report holds for
            ``failed_leads()`` (default 100,000); past it, only their positions are kept
            (``report.failed_ranges()``) and memory stays flat. None keeps all.
        keep_invalid_leads: most invalid leads ``report.invalid_leads`` describes
            (default 10,000); ``report.invalid`` counts them all. None keeps all.
        on_invalid: a plain callable given each `InvalidLead` as it is found (all of
            them, e.g. to write them to a file as the load goes).
        report: a new `BulkReport` to fill live; keep a reference to read it after a
            cancel or an error.
        stop: an `asyncio.Event` or `anyio.Event`: set it to stop the load gently.
            Nothing new is read or sent, the requests in flight end with their real
            outcomes, batches never sent are ``skipped``, and the report (returned, not
            raised) says the load stopped early. A cancel still stops it at once.
        stop_grace: seconds the requests in flight get after a gentle stop (the stop
            event, `BatchStream.stop`, a stream closed early) before they are cancelled
            and end ``unknown`` (default: the client's ``timeout``).
        name, agent_mapping, agents, custom_field_names, terminal_callback_url,
        connect_callback_url: the campaign options of `RyngClient.append`
            (`CampaignOptions`).
    """

    batch_size: int
    max_batch_bytes: int
    concurrency: int
    rate_limit: float | None
    limiter: Limiter | None
    observers: Sequence[LoadObserver]
    checkpoint: str | os.PathLike[str] | SQLiteJournal | None
    resend_unknown: bool
    shard: tuple[int, int] | None
    on_progress: ProgressHook | None
    dedupe: bool
    default_region: str | None
    max_consecutive_failures: int | None
    keep_failed_leads: int | None
    keep_invalid_leads: int | None
    on_invalid: Callable[[InvalidLead], object] | None
    report: BulkReport | None
    stop: asyncio.Event | anyio.Event | None
    stop_grace: float | None


class StopEvent(Protocol):
    """What the engine needs of a stop event (`asyncio.Event`, `anyio.Event`)."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """What one load was asked to do, checked, with every default applied.

    Attributes:
        url: the append endpoint.
        campaign_id: the campaign, as a string.
        batch_size: most leads per request.
        max_batch_bytes: most bytes per request body.
        concurrency: most requests in flight.
        template: the request body around the leads (the campaign options, encoded once).
        limiter: what paces the load's requests (its own, or the client's).
        shard: ``(index, count)`` of this worker's share of the input, or None.
        journal: the checkpoint journal, or None.
        resend_unknown: send again the batches an earlier run left in flight.
        identity: what the journal checks the load against.
        observers: the client's, the load's and its ``on_progress`` (not the journal).
        max_consecutive_failures: batches in a row not accepted that stop the load.
        dedupe: refuse a lead whose number the load already had.
        normalize: makes a lead's number E.164 (``default_region``), or None.
        report: the report to fill (the caller's ``report=`` or a new one).
        keep_failed_leads: most leads of batches not accepted the report holds.
        keep_invalid_leads: most invalid leads the report describes.
        on_invalid: given each invalid lead as it is found, or None.
        stop_event: the event that stops the load gently, or None.
        stop_grace: seconds the requests in flight get after a gentle stop.
    """

    url: URL
    campaign_id: str
    batch_size: int
    max_batch_bytes: int
    concurrency: int
    template: BodyTemplate
    limiter: Limiter
    shard: tuple[int, int] | None
    journal: SQLiteJournal | None
    resend_unknown: bool
    identity: LoadIdentity
    observers: Observers
    max_consecutive_failures: int | None
    dedupe: bool
    normalize: Callable[[Any], Any] | None
    report: BulkReport
    keep_failed_leads: int | None
    keep_invalid_leads: int | None
    on_invalid: Callable[[InvalidLead], object] | None
    stop_event: StopEvent | None
    stop_grace: float


def load_settings(
    sender: Sender, url: str, campaign_id: str | int, options: BulkOptions
) -> LoadSettings:
    """Check a load's options and apply their defaults.

    Raises:
        ConfigurationError: an option is not of its type or out of its range.
    """
    batch_size = check_int(options.get("batch_size", DEFAULT_BATCH_SIZE), "batch_size")
    concurrency = check_int(options.get("concurrency", DEFAULT_CONCURRENCY), "concurrency")
    campaign = cast(
        "CampaignOptions",
        {key: value for key, value in options.items() if key in CAMPAIGN_OPTION_NAMES},
    )
    template = BodyTemplate(build_request(**campaign))
    max_batch_bytes = options.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)
    check_int(max_batch_bytes, "max_batch_bytes", template.overhead + 2)
    # A load's own limiter replaces the client's; the client's Retry-After pauses
    # (held by the sender) still hold every request.
    rate_limit = options.get("rate_limit")
    limiter = check_limiter(options.get("limiter"), rate_limit)
    if limiter is None and rate_limit is not None:
        limiter = AdaptiveLimiter(check_rate(rate_limit), clock=sender.clock)
    shard = check_shard(options.get("shard"))
    journal = _as_journal(options.get("checkpoint"))
    identity = LoadIdentity(
        campaign_id=str(campaign_id),
        batch_size=batch_size,
        max_batch_bytes=max_batch_bytes,
        options=bytes(template.prefix),
        shard=shard,
    )
    observers = sender.observers + check_observers(options.get("observers", ()))
    on_progress = options.get("on_progress")
    if on_progress is not None:
        observers += Observers([on_progress_observer(on_progress)])
    failures = options.get("max_consecutive_failures", DEFAULT_MAX_CONSECUTIVE_FAILURES)
    if failures is not None:
        check_int(failures, "max_consecutive_failures")
    normalize = _normalizing(options.get("default_region"))
    report = options.get("report")
    if report is None:
        report = BulkReport()
    elif report.finished or report.total:
        raise ConfigurationError("report= must be a new, empty BulkReport")
    keep_failed = options.get("keep_failed_leads", DEFAULT_KEEP_FAILED_LEADS)
    keep_invalid = options.get("keep_invalid_leads", DEFAULT_KEEP_INVALID_LEADS)
    on_invalid = options.get("on_invalid")
    if on_invalid is not None and not callable(on_invalid):
        raise ConfigurationError(f"on_invalid must be a callable, got {type(on_invalid).__name__}")
    grace = options.get("stop_grace")
    return LoadSettings(
        url=URL(url, encoded=True),
        campaign_id=str(campaign_id),
        batch_size=batch_size,
        max_batch_bytes=max_batch_bytes,
        concurrency=concurrency,
        template=template,
        limiter=limiter or sender.limiter,
        shard=shard,
        journal=journal,
        resend_unknown=bool(options.get("resend_unknown", False)),
        identity=identity,
        observers=observers,
        max_consecutive_failures=failures,
        dedupe=bool(options.get("dedupe", False)),
        normalize=normalize,
        report=report,
        keep_failed_leads=None
        if keep_failed is None
        else check_int(keep_failed, "keep_failed_leads", 0),
        keep_invalid_leads=None
        if keep_invalid is None
        else check_int(keep_invalid, "keep_invalid_leads", 0),
        on_invalid=on_invalid,
        stop_event=_check_stop_event(options.get("stop")),
        stop_grace=(sender.attempt_timeout or DEFAULT_TIMEOUT)
        if grace is None
        else check_grace(grace, "stop_grace"),
    )


def check_grace(value: object, name: str) -> float:
    """Return a grace in seconds (a number >= 0) as a float; refuse anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _check_stop_event(event: object) -> StopEvent | None:
    if event is None:
        return None
    wait = getattr(event, "wait", None)
    if not callable(getattr(event, "is_set", None)) or not inspect.iscoroutinefunction(wait):
        raise ConfigurationError(
            f"stop must be an asyncio.Event or an anyio.Event, got {type(event).__name__}"
        )
    return cast("StopEvent", event)


def _as_journal(checkpoint: object) -> SQLiteJournal | None:
    if checkpoint is None or isinstance(checkpoint, SQLiteJournal):
        return checkpoint
    if isinstance(checkpoint, str | os.PathLike):
        return SQLiteJournal(checkpoint)
    raise ConfigurationError(
        f"checkpoint must be a file path or an SQLiteJournal, got {type(checkpoint).__name__}"
    )


def _normalizing(region: str | None) -> Callable[[Any], Any] | None:
    """A lead's copy with its number in E.164 form, by libphonenumber's rules for ``region``.

    Anything but a mapping or a `Lead` with a string number is left for validation to refuse.
    None (no region) normalizes nothing.
    """
    if region is None:
        return None
    from ._phone import normalizer

    to_e164 = normalizer(region)

    def normalize(lead: Any) -> Any:
        row = lead.to_wire() if isinstance(lead, Lead) else lead
        if not isinstance(row, Mapping) or not isinstance(row.get("number"), str):
            return lead
        return {**row, "number": to_e164(row["number"])}

    return normalize
