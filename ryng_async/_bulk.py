"""The bulk engine: lazy reading, batching, concurrent rate-limited sends, accounting.

One reader task reads the input a batch's worth at a time, validates, packs batches and
hands each to ``concurrency`` sender tasks through an unbuffered stream, so the input is
read only as fast as batches go out and at most about ``concurrency + 2`` batches exist.
Every batch made is held in ``_unfinished`` until its outcome is recorded; whatever is
left there when the load ends (cancel, 403, input error) is accounted for in one place,
`_Load.settle`, as unknown if a request for it may have been processed, else skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from itertools import islice
from types import TracebackType
from typing import Any, Protocol, Self, cast

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream
from yarl import URL

from ._batching import Batch, BodyTemplate, Packer
from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_KEEP_FAILED_LEADS,
    DEFAULT_KEEP_INVALID_LEADS,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TIMEOUT,
)
from ._events import (
    AttemptStarting,
    BatchPacked,
    BatchSettled,
    ExtensionError,
    LoadEnded,
    LoadEvent,
    LoadObserver,
    Observers,
    ProgressHook,
    check_observers,
    on_progress_observer,
)
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ResourceError,
    RyngError,
    ValidationError,
)
from ._exchange import Exchange, SendStoppedError, StopSignal
from ._models import CampaignOptions, Lead, LeadInput
from ._ratelimit import AdaptiveLimiter, Limiter
from ._report import BatchResult, BulkReport, InvalidLead, Outcome
from ._seen import SeenNumbers
from ._sender import Sender
from ._split import Splitter, combine, is_too_large, send_in_parts
from ._validate import (
    CAMPAIGN_OPTION_NAMES,
    build_request,
    check_int,
    check_keywords,
    check_lead_source,
    check_limiter,
    check_rate,
    check_shard,
    leads_are_valid,
    validate_lead,
)
from .checkpoint import BatchState, CheckpointError, JournalledBatch, LoadIdentity, SQLiteJournal

__all__ = ["BatchStream", "BulkOptions", "run_bulk", "start_stream"]

logger = logging.getLogger("ryng_async")

# Seconds the end of a load may spend telling observers, even under cancellation (the
# journal's close is not part of it: it always runs, after them).
_SETTLE_TIMEOUT = 30.0


def _outcome(exchange: Exchange | None, otherwise: Outcome) -> Outcome:
    """Accepted if answered so, unknown if it may have been processed, else ``otherwise``."""
    if exchange is None:
        return otherwise
    if exchange.response is not None:
        return Outcome.ACCEPTED
    return Outcome.UNKNOWN if exchange.maybe_processed else otherwise


async def _let_senders_run() -> None:
    """Yield to the sender just handed a batch, before packing the next one.

    Packing is synchronous; without this, a sender's request body would only start going
    out once the next batch is packed, so no packing would overlap the server's work.
    """
    # Two checkpoints: one for the sender task to start, one for aiohttp's body writer.
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()


class _Load:
    """The state of one bulk load."""

    def __init__(
        self,
        sender: Sender,
        url: str,
        campaign_id: str | int,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        options: BulkOptions,
    ) -> None:
        self.sender = sender
        self.clock = sender.clock
        self.url = URL(url, encoded=True)
        self.batch_size = check_int(options.get("batch_size", DEFAULT_BATCH_SIZE), "batch_size")
        self.concurrency = check_int(options.get("concurrency", DEFAULT_CONCURRENCY), "concurrency")
        campaign = cast(
            "CampaignOptions",
            {key: value for key, value in options.items() if key in CAMPAIGN_OPTION_NAMES},
        )
        template = BodyTemplate(build_request(**campaign))
        max_batch_bytes = options.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)
        check_int(max_batch_bytes, "max_batch_bytes", template.overhead + 2)
        # A batch refused as too large (413) is sent again in halves: see _split.
        self.packer, self.split = (
            Packer(template, self.batch_size, max_batch_bytes),
            Splitter(template),
        )
        # A load's own limiter replaces the client's; the client's Retry-After pauses
        # (held by the sender) still hold every request.
        rate_limit = options.get("rate_limit")
        limiter = check_limiter(options.get("limiter"), rate_limit)
        if limiter is None and rate_limit is not None:
            limiter = AdaptiveLimiter(check_rate(rate_limit), clock=self.clock)
        self.limiter: Limiter = limiter or sender.limiter
        self.shard = check_shard(options.get("shard"))
        self.journal = _as_journal(options.get("checkpoint"))
        self.resend_unknown = bool(options.get("resend_unknown", False))
        self.identity = LoadIdentity(
            campaign_id=str(campaign_id),
            batch_size=self.batch_size,
            max_batch_bytes=max_batch_bytes,
            options=bytes(template.prefix),
            shard=self.shard,
        )
        self.digests: dict[int, bytes] = {}
        self.resent_after_doubt: set[int] = set()
        self.observers = self._observers(options)
        limit = options.get("max_consecutive_failures", DEFAULT_MAX_CONSECUTIVE_FAILURES)
        if limit is not None:
            check_int(limit, "max_consecutive_failures")
        self.max_consecutive_failures = limit
        self.consecutive_failures = 0
        self.input_done = False
        self.seen = SeenNumbers() if options.get("dedupe", False) else None
        self.normalize = _normalizing(options.get("default_region"))
        check_lead_source(leads)
        self.leads = leads
        report = options.get("report")
        self.report = report if report is not None else BulkReport()
        if self.report.finished or self.report.total:
            raise ConfigurationError("report= must be a new, empty BulkReport")
        self.report.campaign_id = str(campaign_id)
        self.report.leads_kept = self.journal is None
        self.on_invalid = self._bounds(options)
        self.report.start(self.clock.now())
        self.position = 0
        self.held: list[Any] = []
        self.unfinished: dict[int, Batch] = {}
        self.exchanges: dict[int, Exchange] = {}
        self.emit: Callable[[BatchResult], Any] | None = None
        self._init_stop(options)

    def _init_stop(self, options: BulkOptions) -> None:
        """What stops the load: an error (`fail`), or a gentle stop (`stop_gently`)."""
        self.stop_signal = StopSignal()
        self.fatal: BaseException | None = None
        self.stop_reason: str | None = None
        # After a gentle stop, the requests in flight get stop_grace seconds.
        self.stop_event = _check_stop_event(options.get("stop"))
        grace = options.get("stop_grace")
        self.stop_grace = (
            (self.sender.attempt_timeout or DEFAULT_TIMEOUT)
            if grace is None
            else _check_grace(grace, "stop_grace")
        )
        self.grace_ran_out = False
        self._grace_asked: float | None = None  # the shortest grace asked before the load ran
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: anyio.Event | None = None
        self._stop_deadline = math.inf
        self._grace_scope: anyio.CancelScope | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._reading: anyio.CancelScope | None = None
        self._workers = 0

    def _bounds(self, options: BulkOptions) -> Callable[[InvalidLead], object] | None:
        """Set what the report holds (leads kept, shards); return ``on_invalid``."""
        keep = options.get("keep_failed_leads", DEFAULT_KEEP_FAILED_LEADS)
        self.report.keep_failed_leads = (
            None if keep is None else check_int(keep, "keep_failed_leads", 0)
        )
        self.report.shard = self.shard
        if self.shard is not None:
            self.report.sharding = (self.shard[1], self.batch_size)
        keep = options.get("keep_invalid_leads", DEFAULT_KEEP_INVALID_LEADS)
        self.report.keep_invalid_leads = (
            None if keep is None else check_int(keep, "keep_invalid_leads", 0)
        )
        on_invalid = options.get("on_invalid")
        if on_invalid is not None and not callable(on_invalid):
            raise ConfigurationError(
                f"on_invalid must be a callable, got {type(on_invalid).__name__}"
            )
        return on_invalid

    def _observers(self, options: BulkOptions) -> Observers:
        """The client's observers, the load's, its on_progress hook, then its journal."""
        observers = self.sender.observers + check_observers(options.get("observers", ()))
        on_progress = options.get("on_progress")
        if on_progress is not None:
            observers += Observers([on_progress_observer(on_progress)])
        if self.journal is not None:
            # Last: a request is journalled in flight only once every other observer let it go.
            observers += Observers([_JournalObserver(self)])
        return observers

    # -- reading ---------------------------------------------------------------------

    async def read(self, send: ObjectSendStream[Batch]) -> None:
        async with send:
            try:
                if isinstance(self.leads, AsyncIterable):
                    await self._read_async(self.leads, send)
                else:
                    await self._read_sync(iter(self.leads), send)
            except Exception as exc:  # the user's iterator failed: stop, keep the report
                self.fail(exc, f"the input raised {type(exc).__name__}: {exc}")

    async def _read_sync(self, source: Iterable[Any], send: ObjectSendStream[Batch]) -> None:
        iterator = iter(source)
        while not self.stopping:
            await _let_senders_run()
            self.held.extend(islice(iterator, self.batch_size))
            if not self.held:
                self.input_done = True
                break
            await self.queue(self.take(), send)
        if not self.stopping:
            await self.queue(self.flush(), send)

    async def _read_async(self, source: AsyncIterable[Any], send: ObjectSendStream[Batch]) -> None:
        iterator = aiter(source)
        exhausted = False
        try:
            while not self.stopping and not exhausted:
                await _let_senders_run()
                # A stop cancels the wait for the next lead: an input that stalls (a pipe,
                # a slow query) must not hold the stop until its grace runs out.
                with anyio.CancelScope() as self._reading:
                    if self.fatal is not None:  # stopped during the yield above
                        self._reading.cancel()
                    async for lead in iterator:
                        self.held.append(lead)
                        if len(self.held) >= self.batch_size:
                            break
                    else:
                        exhausted = self.input_done = True
                self._reading = None
                await self.queue(self.take(), send)
            if not self.stopping:
                await self.queue(self.flush(), send)
        finally:
            # Close an async generator we stopped reading here, in this task, rather than
            # leave it to a garbage-collection hook in another task.
            aclose = getattr(iterator, "aclose", None)
            if not exhausted and aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def queue(self, batches: list[Batch], send: ObjectSendStream[Batch]) -> None:
        """Tell the observers of each batch packed, then hand it to a sender.

        With a checkpoint, a batch the journal holds as accepted (or in flight, which may
        be in Ryng) is settled from the journal instead of being sent again.
        """
        for batch in batches:
            if self.stopping:
                return  # left unfinished: settle() accounts for it
            if self.journal is not None:
                resumed = self.resumed_from_journal(batch)
                if resumed is not None:
                    await self.finish_batch(batch, resumed)
                    continue
                if self.fatal is not None:
                    return  # the input changed under the journal: fail() said so
            if self.observers:
                try:
                    await self.observers.emit(
                        BatchPacked(
                            campaign_id=self.report.campaign_id,
                            index=batch.index,
                            start=batch.start,
                            count=batch.count,
                            size=len(batch.body),
                        )
                    )
                except ExtensionError as failure:
                    self.fail_extension(failure)
                    return
            await send.send(batch)

    def resumed_from_journal(self, batch: Batch) -> BatchResult | None:
        """The result of ``batch`` from an earlier run's record, if it must not be sent.

        Synchronous (no coroutine a batch on the hot path). A batch whose content changed
        since the journal was written fails the load (``fatal`` is then set).
        """
        assert self.journal is not None  # noqa: S101 - only called with a journal
        digest = self.journal.digest(batch.body)
        ranges = batch.ranges
        try:
            prior = self.journal.prior(
                batch.index, start=batch.start, count=batch.count, digest=digest, ranges=ranges
            )
        except RyngError as exc:  # the input changed under the journal
            self.fail(exc, str(exc))
            return None
        outcome = _resumed_outcome(prior, resend_unknown=self.resend_unknown)
        if prior is None or outcome is None:
            self.digests[batch.index] = digest
            if prior is not None and prior.state in _MAYBE_IN_RYNG:
                self.resent_after_doubt.add(batch.index)  # resend_unknown: maybe twice now
            return None
        if outcome is Outcome.ACCEPTED:
            message = f"accepted in an earlier run: {prior.message}"
        else:
            message = (
                "in flight when an earlier run stopped: it may have been appended; check "
                "these leads in Ryng, then record what you found (ryng-async checkpoint "
                "resolve, or SQLiteJournal.resolve); resend_unknown=True sends them anyway"
            )
        return BatchResult(
            index=batch.index,
            start=batch.start,
            count=batch.count,
            outcome=outcome,
            status=prior.status,
            message=message,
            attempts=0,
            elapsed=0.0,
            resumed=True,
            maybe_duplicated=prior.maybe_duplicated,
            ranges=ranges,
        )

    def take(self) -> list[Batch]:
        """Validate and pack the leads read so far; return (and hold) the batches made."""
        chunk, self.held = self.held, []
        start = self.position
        self.position += len(chunk)
        self.report.input_read = self.position
        if self.shard is not None and (start // self.batch_size) % self.shard[1] != self.shard[0]:
            return []  # another worker's block of the input (chunks are batch_size-aligned)
        self.report.total += len(chunk)
        if self.seen is None and self.normalize is None and leads_are_valid(chunk):
            rows = chunk
            positions = list(range(start, start + len(chunk)))
        else:
            rows, positions = self._validate_each(chunk, start)
        batches = self.packer.add(rows, positions)
        if self.shard is not None:
            # A shard's blocks are not consecutive: no batch carries leads across two.
            batches += self.packer.finish()
        return self._track(batches)

    def flush(self) -> list[Batch]:
        return self._track(self.packer.finish())

    def _track(self, batches: list[Batch]) -> list[Batch]:
        if self.packer.invalid:
            self.record_invalid(self.packer.invalid)
            self.packer.invalid = []
        for batch in batches:
            self.unfinished[batch.index] = batch
        return batches

    def _validate_each(
        self, chunk: list[Any], start: int
    ) -> tuple[list[dict[str, Any]], list[int]]:
        rows: list[dict[str, Any]] = []
        positions: list[int] = []
        invalid: list[InvalidLead] = []
        normalize = self.normalize
        for position, lead in enumerate(chunk, start):
            try:
                row = validate_lead(lead if normalize is None else normalize(lead), position)
            except ValidationError as exc:
                invalid.append(InvalidLead(position=position, field=exc.field, reason=exc.reason))
                continue
            rows.append(row)
            positions.append(position)
        if self.seen is not None and rows:
            rows, positions = self._dedupe(rows, positions, invalid)
        if invalid:
            self.record_invalid(invalid)
        return rows, positions

    def _dedupe(
        self, rows: list[dict[str, Any]], positions: list[int], invalid: list[InvalidLead]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Refuse, as invalid, the leads whose number this load already had (one lookup)."""
        assert self.seen is not None  # noqa: S101 - only called when deduplicating
        fresh = self.seen.add_many([row["number"] for row in rows])
        if all(fresh):
            return rows, positions
        kept_rows, kept_positions = [], []
        for row, position, new in zip(rows, positions, fresh, strict=True):
            if new:
                kept_rows.append(row)
                kept_positions.append(position)
            else:
                invalid.append(
                    InvalidLead(
                        position=position,
                        field="number",
                        reason=f"duplicate of an earlier lead in this load: {row['number']}",
                    )
                )
        invalid.sort(key=lambda lead: lead.position)
        return kept_rows, kept_positions

    def record_invalid(self, invalid: list[InvalidLead]) -> None:
        """Count leads refused before sending, and hand each to ``on_invalid``.

        Plain code that also runs in `settle`: what ``on_invalid`` raises stops the load
        (raised once it has settled) and it is not called again.
        """
        self.report.record_invalid(invalid)
        if self.on_invalid is None:
            return
        try:
            for lead in invalid:
                self.on_invalid(lead)
        except Exception as exc:
            self.on_invalid = None
            self.fail(exc, f"{type(exc).__name__} raised by on_invalid: {exc}")

    # -- sending ---------------------------------------------------------------------

    async def send_all(self, receive: ObjectReceiveStream[Batch]) -> None:
        async with receive:
            async for batch in receive:
                if self.stopping:
                    continue  # left in _unfinished: settle() marks it skipped
                result = await self.send_one(batch)
                await self.finish_batch(batch, result)

    @property
    def stopping(self) -> bool:
        return self.stop_signal.fired

    async def send_one(self, batch: Batch) -> BatchResult:
        """Send one batch; one refused as too large (413) is sent again in halves."""
        limit = self.split.limit
        first = None
        if limit.fits(len(batch.body)) or batch.count == 1:
            first = await self._send_batch(batch)
            if not is_too_large(first.error) or self.stopping:
                if first.outcome is Outcome.ACCEPTED:
                    limit.note_accepted(len(batch.body))
                return first
        parts = await send_in_parts(batch, self.split, partial(self._send_part, batch), first=first)
        self.report.body_refused, self.report.body_accepted = limit.refused, limit.accepted
        self.split.doubtful.discard(batch.index)
        return combine(batch, parts, keep_leads=self.report.leads_kept)

    async def _send_part(self, batch: Batch, part: Batch) -> BatchResult:
        result = await self._send_batch(part)
        if result.outcome in {Outcome.ACCEPTED, Outcome.UNKNOWN}:
            self.split.doubtful.add(batch.index)  # cancelled from here on: unknown
        return result

    async def _send_batch(self, batch: Batch) -> BatchResult:
        exchange = Exchange(campaign_id=self.report.campaign_id, batch_index=batch.index)
        self.exchanges[batch.index] = exchange
        started = self.clock.now()
        body = batch.body
        error: RyngError | None = None
        try:
            response = await self.sender.send(
                exchange,
                self.url,
                lambda: body,
                limiter=self.limiter,
                observers=self.observers,
                stop=self.stop_signal,
            )
            message = response.message
        except SendStoppedError:
            message = f"not sent: {self.stop_reason}"
        except (ConfigurationError, ResourceError) as exc:  # closed client, no descriptors
            message = f"not sent: {exc}"
            self.fail(exc, str(exc))
        except ExtensionError as failure:  # an observer or the limiter raised
            error = failure.request_error
            message = (
                failure.response.message
                if failure.response is not None
                else f"stopped: {type(failure.cause).__name__}: {failure.cause}"
            )
            self.fail_extension(failure)
        except RyngError as exc:
            error = exc
            message = exc.message if isinstance(exc, APIError) else str(exc)
            if isinstance(exc, AuthenticationError):
                self.fail(exc, "403: the access token was refused")
        # Not answered accepted: unknown if it may have been processed; failed if it got
        # a definite error; else (stopped before any attempt went) skipped.
        outcome = _outcome(exchange, Outcome.SKIPPED if error is None else Outcome.FAILED)
        self._count_failures(outcome)
        return self._result(
            batch=batch,
            outcome=outcome,
            exchange=exchange,
            message=message,
            error=None if outcome is Outcome.ACCEPTED else error,
            started=started,
        )

    def fail_extension(self, failure: ExtensionError) -> None:
        """Stop the load for what an observer or the limiter raised (raised once settled)."""
        cause = failure.cause
        self.fail(cause, f"{type(cause).__name__} raised by an observer or the limiter: {cause}")

    def _count_failures(self, outcome: Outcome) -> None:
        """Stop a load whose batches keep failing, rather than read the whole input.

        A server that is down would otherwise fail batch after batch to the end of the
        input, and the report would hold every lead of it for `failed_leads`.
        """
        if outcome is Outcome.ACCEPTED:
            self.consecutive_failures = 0
            return
        if outcome is Outcome.SKIPPED:
            return
        self.consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit is not None and self.consecutive_failures >= limit and not self.stopping:
            self.fail(_TooManyFailuresError(), f"{limit} batches in a row were not accepted")

    def _result(
        self,
        *,
        batch: Batch,
        outcome: Outcome,
        exchange: Exchange | None,
        message: str,
        error: RyngError | None,
        started: float | None,
    ) -> BatchResult:
        if error is not None:
            _drop_tracebacks(error)
        return BatchResult(
            index=batch.index,
            start=batch.start,
            count=batch.count,
            outcome=outcome,
            status=None if exchange is None else exchange.status,
            message=message,
            attempts=0 if exchange is None else exchange.attempts,
            elapsed=0.0 if started is None else self.clock.now() - started,
            error=error,
            leads=()
            if outcome is Outcome.ACCEPTED or not self.report.leads_kept
            else tuple(batch.rows),
            maybe_duplicated=(exchange is not None and exchange.maybe_duplicated)
            or batch.index in self.resent_after_doubt,
            ranges=batch.ranges,
        )

    async def finish_batch(self, batch: Batch, result: BatchResult) -> None:
        self.record(batch, result)
        await self.tell_settled(result)
        await self.hand_over(result)

    async def hand_over(self, result: BatchResult) -> None:
        """Give a result to the stream's consumer, if there is one still reading."""
        if self.emit is not None:
            # A consumer that left does not need it; the report has it.
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.emit(result)

    def record(self, batch: Batch, result: BatchResult) -> None:
        del self.unfinished[batch.index]
        self.digests.pop(batch.index, None)
        self.exchanges.pop(batch.index, None)
        self.report.record(result)

    async def tell_settled(self, result: BatchResult) -> None:
        if not self.observers:
            return
        progress = self.report.progress(self.limiter.rate, self.clock.now())
        try:
            await self.observers.emit(
                BatchSettled(campaign_id=self.report.campaign_id, result=result, progress=progress)
            )
        except ExtensionError as failure:
            self.fail_extension(failure)

    def fail(self, exc: BaseException, reason: str) -> None:
        """Stop reading and sending; ``exc`` is raised once the load has settled.

        The first reason stands, except that an error (a 403, an observer's exception)
        after a gentle stop is still raised.
        """
        if self.fatal is not None and (
            isinstance(exc, _StoppedError) or not isinstance(self.fatal, _StoppedError)
        ):
            return
        self.fatal = exc
        self.stop_signal.fire()
        if self._reading is not None:
            self._reading.cancel()
        self.stop_reason = reason
        if not isinstance(exc, _StoppedError):
            self.report.stop(reason)
        # else: settle() says the load stopped early only if something was left undone.
        level = logging.DEBUG if isinstance(exc, _StoppedError) else logging.WARNING
        logger.log(level, "bulk load of campaign %s stops: %s", self.report.campaign_id, reason)

    # -- a gentle stop -----------------------------------------------------------------

    def stop_gently(self, reason: str, grace: float | None = None) -> None:
        """Read and send nothing new; cancel the requests in flight after ``grace`` seconds.

        ``grace`` None is the load's ``stop_grace``. Called again, the shorter grace wins.
        Synchronous, from the event loop's thread (a task or a callback).
        """
        if self.report.finished:
            return
        self.fail(_StoppedError(), reason)
        grace = self.stop_grace if grace is None else grace
        if self._stop_asked is None or self._loop is None:  # the load has not started yet
            asked = self._grace_asked
            self._grace_asked = grace if asked is None else min(grace, asked)
            return
        deadline = self._loop.time() + grace
        if deadline < self._stop_deadline:
            self._stop_deadline = deadline
            if self._grace_scope is not None:
                self._grace_scope.deadline = deadline
        self._stop_asked.set()

    def begin(self) -> None:
        """Prepare the gentle stop, in the load's task group as it starts."""
        self._loop = asyncio.get_running_loop()
        self._stop_asked = anyio.Event()
        self._watch_scope = anyio.CancelScope()
        self._workers = 1 + self.concurrency
        if self._grace_asked is not None:  # stopped before it ran
            grace, self._grace_asked = self._grace_asked, None
            self.stop_gently(self.stop_reason or "stopped on request", grace)
        if self.stop_event is not None and self.stop_event.is_set():
            self.stop_gently(_STOP_EVENT_REASON)

    async def watch(self, work: anyio.CancelScope) -> None:
        """Stop on the stop event; cancel ``work`` once a gentle stop's grace has run out.

        Runs beside the reader and senders until the last of them ends.
        """
        assert self._watch_scope is not None  # noqa: S101 - set by begin()
        with self._watch_scope:
            async with anyio.create_task_group() as watchers:
                if self.stop_event is not None:
                    watchers.start_soon(self._on_stop_event, self.stop_event)
                assert self._stop_asked is not None  # noqa: S101 - set by begin()
                await self._stop_asked.wait()
                with anyio.CancelScope(deadline=self._stop_deadline) as self._grace_scope:
                    await anyio.sleep_forever()
                self._grace_scope = None
                self.grace_ran_out = True
                self.stop_reason = (
                    f"{self.stop_reason}; the requests still in flight when the stop's grace "
                    "ran out were cancelled"
                )
                logger.warning(
                    "bulk load of campaign %s: the requests still in flight when the stop's "
                    "grace ran out are cancelled (they end unknown)",
                    self.report.campaign_id,
                )
                work.cancel()

    async def _on_stop_event(self, event: _StopEvent) -> None:
        await event.wait()
        self.stop_gently(_STOP_EVENT_REASON)

    async def worker(self, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run the reader or a sender; the last of them to end ends the watch."""
        try:
            await work(*args)
        finally:
            self._workers -= 1
            if self._workers <= 0 and self._watch_scope is not None:
                self._watch_scope.cancel()

    # -- ending ----------------------------------------------------------------------

    def settle(self) -> list[BatchResult]:
        """Account for every lead read but not yet in an outcome; end the report.

        Runs in a ``finally``: plain synchronous code, safe while a cancel is pending.
        Returns the results it recorded, for the observers.
        """
        if not self.input_done or self.held or self.packer.pending or self.unfinished:
            if not self.stopping:
                self.stop_reason = "cancelled"
                self.report.stop(self.stop_reason)
            if self.held:
                self.take()
            self.flush()
        settled = []
        for index in sorted(self.unfinished):
            batch = self.unfinished[index]
            exchange = self.exchanges.get(index)
            outcome = _outcome(exchange, Outcome.SKIPPED)
            if index in self.split.doubtful:  # a part of it may be in Ryng already
                outcome = Outcome.UNKNOWN
            message = (
                "cancelled after sending: may have been appended"
                if outcome is Outcome.UNKNOWN
                else f"not sent: {self.stop_reason}"
            )
            result = self._result(
                batch=batch,
                outcome=outcome,
                exchange=exchange,
                message=message,
                error=None,
                started=None,
            )
            self.record(batch, result)
            settled.append(result)
        if isinstance(self.fatal, _StoppedError) and (not self.input_done or settled):
            self.report.stop(self.stop_reason or "the result stream was closed")
        if not self.input_done:
            self.report.mark_unread(self.position)
        if self.seen is not None:
            self.seen.close()
        self.report.finish(self.clock.now())
        return settled

    async def end(self) -> Exception | None:
        """Settle, tell the observers (within their time limit), then close the journal.

        The journal records the batches settled here first and is closed whatever the
        observers do (a slow one, a cancel): the next run must find it released. Returns
        the close's error (carrying ``.report``) for the caller to raise or note.
        """
        settled = self.settle()
        if self.journal is not None:
            for result in settled:
                _journal_settled(self.journal, result)
        # Shielded and bounded: observers hear how the load ended even under a cancel.
        with anyio.move_on_after(_SETTLE_TIMEOUT, shield=True):
            await self.tell_ended(settled)
        return await self._close_journal()

    async def _close_journal(self) -> Exception | None:
        journal = self.journal
        if journal is None:
            return None
        try:
            with anyio.CancelScope(shield=True):
                await journal.aclose()
        except Exception as exc:  # noted on the load's own error, or raised alone
            error = exc
            if not isinstance(exc, RyngError):
                error = CheckpointError(
                    f"could not close the checkpoint journal {journal.path!r}: "
                    f"{type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
            error.report = self.report  # type: ignore[attr-defined]
            return error
        return None

    async def tell_ended(self, settled: list[BatchResult]) -> None:
        """Tell of the batches settled at the end (a stream's consumer too), then of the end."""
        for result in settled:
            await self.tell_settled(result)
            await self.hand_over(result)
        if self.observers:
            try:
                await self.observers.emit(LoadEnded(report=self.report))
            except ExtensionError as failure:
                self.fail_extension(failure)


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
            failed or unknown (default 20); None never stops.
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


def _new_load(
    sender: Sender,
    url: str,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
    *,
    caller: str,
) -> _Load:
    check_keywords(options, BulkOptions.__annotations__, caller)
    sender.session()  # a closed client refuses before reading anything
    return _Load(sender, url, campaign_id, leads, options)


async def _run(load: _Load) -> BulkReport:
    """Run a load to its end and return its report; raise what stopped it, if anything."""
    if load.journal is not None:
        try:
            await load.journal.open(load.identity)
        except BaseException as exc:  # refused before anything is read or sent
            load.report.stop(f"the checkpoint cannot be used: {exc}")
            load.report.mark_unread(0)
            load.report.finish(load.clock.now())
            raise
    try:
        await _work(load)
    except BaseException as exc:  # a cancel, or a bug: it stays the error raised
        _note_close_error(exc, await load.end())
        raise
    close_error = await load.end()
    fatal = load.fatal
    if fatal is not None and not isinstance(fatal, _StoppedError | _TooManyFailuresError):
        if isinstance(fatal, RyngError):
            fatal.report = load.report
        else:
            fatal.add_note(f"ryng_async: partial bulk report: {load.report}")
        _note_close_error(fatal, close_error)
        raise fatal
    if close_error is not None:
        raise close_error
    return load.report


async def _work(load: _Load) -> None:
    """The reader, the senders and the watch of a gentle stop, in one task group."""
    send, receive = anyio.create_memory_object_stream[Batch](0)
    async with anyio.create_task_group() as tasks:
        load.begin()
        tasks.start_soon(load.watch, tasks.cancel_scope)
        tasks.start_soon(load.worker, load.read, send)
        async with receive:
            for _ in range(load.concurrency):
                tasks.start_soon(load.worker, load.send_all, receive.clone())


def _note_close_error(error: BaseException, close_error: Exception | None) -> None:
    """Add the journal's close error to the error a load ends with, never replacing it."""
    if close_error is None:
        return
    logger.warning("%s", close_error)
    error.add_note(f"ryng_async: and the checkpoint journal did not close cleanly: {close_error}")


async def run_bulk(
    sender: Sender,
    url: str,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
) -> BulkReport:
    """Run a bulk load and return its `BulkReport` (see `RyngClient.bulk_append`)."""
    return await _run(_new_load(sender, url, campaign_id, leads, options, caller="bulk_append"))


class BatchStream:
    """The `BatchResult` s of a load, in completion order, as an async iterator.

    The load runs in a task of its own from the first iteration, never in a task group
    held across a ``yield``: leaving the loop early is safe however it is done. With
    ``async with client.stream_append(...) as results`` (or `aclose`), leaving stops the
    load and waits until it has settled. A bare ``async for`` that breaks stops it too,
    once the stream is garbage-collected (at once in CPython) or the client is closed:
    nothing new is sent, the requests in flight end, and `report` becomes final and
    exact. `stop` stops the load gently while the iteration goes on to its last results.
    What stopped the load (a 403, an input error) is raised from the iteration.
    """

    def __init__(self, load: _Load, sender: Sender) -> None:
        self._load = load
        self._sender = sender
        self._send, self._receive = anyio.create_memory_object_stream[BatchResult](load.concurrency)
        load.emit = self._send.send
        self._failure: list[Exception] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def report(self) -> BulkReport:
        """The live report of this load."""
        return self._load.report

    def _start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(
                _drive(self._load, self._send, self._failure),
                name=f"ryng_async bulk load of campaign {self._load.report.campaign_id}",
            )
            self._sender.adopt(self._task, partial(_stop, self._load, "the client was closed"))
        return self._task

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BatchResult:
        task = self._start()
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            await task
            if self._failure:
                failure, self._failure[:] = self._failure[0], []
                raise failure from None
            raise StopAsyncIteration from None

    def stop(self, *, grace: float | None = None) -> None:
        """Stop the load gently: nothing new is read or sent; the requests in flight end.

        Iterate on to receive their results; the iteration then ends, batches never sent
        are ``skipped`` and `report` says the load stopped early. A request still in
        flight ``grace`` seconds later (default: the load's ``stop_grace``, the client's
        ``timeout`` unless given) is cancelled and its batch ends ``unknown``; call again
        with a shorter grace to cut the wait (0: cancel them now). Call it from the event
        loop's thread (a signal handler added with ``loop.add_signal_handler`` is).
        """
        self._load.stop_gently(
            "stopped on request (BatchStream.stop)",
            None if grace is None else _check_grace(grace, "grace"),
        )

    async def aclose(self) -> None:
        """Stop the load (nothing new is sent) and wait for it to settle."""
        _stop(self._load, "the result stream was closed")
        self._receive.close()  # a sender blocked on a full stream is let go
        if self._task is None:
            self._send.close()
            return
        # Nothing new is sent now; the requests in flight end with real outcomes.
        await self._task

    def __del__(self) -> None:
        # An abandoned stream (a bare ``async for`` that broke): stop its load from the
        # event loop, which settles it and ends its task; nothing is left running.
        loop, task = self._loop, self._task
        if task is None or task.done():
            self._send.close()  # closed by the load already, if it ran
            self._receive.close()
        elif loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._abandon, self._load, self._receive)

    @staticmethod
    def _abandon(load: _Load, receive: MemoryObjectReceiveStream[BatchResult]) -> None:
        _stop(load, "the result stream was abandoned")
        receive.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _drive(
    load: _Load, send: ObjectSendStream[BatchResult], failure: list[Exception]
) -> None:
    """Run a streamed load to its end; keep what stopped it for the consumer."""
    async with send:
        try:
            await _run(load)
        except Exception as exc:  # raised to the consumer, bare, not in an ExceptionGroup
            failure.append(exc)


def _stop(load: _Load, reason: str) -> None:
    load.stop_gently(reason)


class _StoppedError(Exception):
    """A gentle stop: `BatchStream.stop`, the stop event, a stream closed early (not raised)."""


class _TooManyFailuresError(Exception):
    """``max_consecutive_failures`` stopped the load (its report says so; not raised)."""


def start_stream(
    sender: Sender,
    url: str,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
) -> BatchStream:
    """Start a bulk load whose results are iterated as they come (see `BatchStream`)."""
    return BatchStream(
        _new_load(sender, url, campaign_id, leads, options, caller="stream_append"), sender
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


def _drop_tracebacks(error: BaseException) -> None:
    """Let the frames of a failed attempt go: its error lives as long as the report.

    A traceback keeps every frame of the attempt alive, the batch's body among their
    locals: about 20 MB over a million leads with one batch in five failing. The chain
    (cause, context) is cleared too, at most a few links deep.
    """
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen and len(seen) < 8:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__


_STOP_EVENT_REASON = "stopped on request (the stop event was set)"


class _StopEvent(Protocol):
    """What the engine needs of a stop event (`asyncio.Event`, `anyio.Event`)."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def _check_stop_event(event: object) -> _StopEvent | None:
    if event is None:
        return None
    wait = getattr(event, "wait", None)
    if not callable(getattr(event, "is_set", None)) or not inspect.iscoroutinefunction(wait):
        raise ConfigurationError(
            f"stop must be an asyncio.Event or an anyio.Event, got {type(event).__name__}"
        )
    return cast("_StopEvent", event)


def _check_grace(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _as_journal(checkpoint: object) -> SQLiteJournal | None:
    if checkpoint is None or isinstance(checkpoint, SQLiteJournal):
        return checkpoint
    if isinstance(checkpoint, str | os.PathLike):
        return SQLiteJournal(checkpoint)
    raise ConfigurationError(
        f"checkpoint must be a file path or an SQLiteJournal, got {type(checkpoint).__name__}"
    )


_MAYBE_IN_RYNG = frozenset({BatchState.IN_FLIGHT, BatchState.UNKNOWN})
_JOURNAL_STATE = {outcome: BatchState(outcome.value) for outcome in Outcome}


def _resumed_outcome(prior: JournalledBatch | None, *, resend_unknown: bool) -> Outcome | None:
    """The outcome an earlier run settled a batch with, or None if it is to be sent."""
    if prior is None:
        return None
    if prior.state is BatchState.ACCEPTED:
        return Outcome.ACCEPTED
    if prior.state in _MAYBE_IN_RYNG and not resend_unknown:
        return Outcome.UNKNOWN
    return None  # failed, skipped, or unknown to resend: send it (again)


class _JournalObserver:
    """Journals each attempt durably before it is written, and each outcome once known.

    Synchronous, returning the commit's future only for an attempt about to start: the
    hot path makes no coroutine for the events it ignores.
    """

    __slots__ = ("_load",)

    def __init__(self, load: _Load) -> None:
        self._load = load

    def __call__(self, event: LoadEvent) -> Awaitable[None] | None:
        load = self._load
        journal = load.journal
        if journal is None:  # pragma: no cover - attached only with a journal
            return None
        if isinstance(event, AttemptStarting) and event.batch_index is not None:
            batch = load.unfinished[event.batch_index]
            return journal.in_flight_future(
                batch.index,
                start=batch.start,
                count=batch.count,
                digest=load.digests[batch.index],
                attempt=event.attempt,
                ranges=batch.ranges,
            )
        if isinstance(event, BatchSettled) and not load.report.finished:
            # Once the report is finished, end() has journalled the rest itself.
            _journal_settled(journal, event.result)
        return None


def _journal_settled(journal: SQLiteJournal, result: BatchResult) -> None:
    """Queue a batch's outcome for the journal (a resumed one is there already).

    Committed with the next group (or at close): a load does not wait on it. Lost to a
    crash, the batch reads as in flight, so unknown: never resent.
    """
    if result.resumed:
        if result.outcome is Outcome.UNKNOWN:
            # In flight when a run died: this run says unknown, and the journal too,
            # so it is not listed as in flight (as if a load were sending it) forever.
            journal.resolve_in_flight(result.index, message=result.message)
        return
    journal.settled_nowait(
        result.index,
        state=_JOURNAL_STATE[result.outcome],
        attempts=result.attempts,
        status=result.status,
        message=result.message,
        maybe_duplicated=result.maybe_duplicated,
    )
