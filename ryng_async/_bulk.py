"""The bulk engine: lazy reading, batching, concurrent rate-limited sends, accounting.

One reader task reads the input a batch's worth at a time, validates, packs batches and
hands each to ``concurrency`` sender tasks through an unbuffered stream, so the input is
read only as fast as batches go out and at most about ``concurrency + 2`` batches exist.
Every batch made is held in ``_unfinished`` until its outcome is recorded; whatever is
left there when the load ends (cancel, 403, input error) is accounted for in one place,
`_Load.settle`, as unknown if a request for it may have been processed, else skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, suppress
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from yarl import URL

from ._batching import Batch, BodyTemplate, Packer
from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
)
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    RyngError,
    ValidationError,
)
from ._exchange import Exchange, SendStoppedError, StopSignal, check_hook
from ._models import AgentMapping
from ._ratelimit import RatePacer, check_rate
from ._report import BatchResult, BulkReport, Outcome, Progress
from ._validate import InvalidLead, build_request, leads_are_valid, validate_lead

if TYPE_CHECKING:
    from ._client import LeadInput, RyngClient

__all__ = ["BatchStream", "BulkOptions", "ProgressHook", "bulk_append", "stream_append"]

logger = logging.getLogger("ryng_async")

ProgressHook = Callable[[Progress], object]
"""Called with a `Progress` snapshot after every batch."""


def _outcome(exchange: Exchange | None, otherwise: Outcome) -> Outcome:
    """A batch that may have been processed is unknown, whatever else ended it."""
    return Outcome.UNKNOWN if exchange is not None and exchange.maybe_processed else otherwise


async def _let_senders_run() -> None:
    """Yield to the sender just handed a batch, before packing the next one.

    Packing is synchronous; without this, a sender's request body would only start going
    out once the next batch is packed, so no packing would overlap the server's work.
    """
    # Two checkpoints: one for the sender task to start, one for aiohttp's body writer.
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()


def _check_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _Load:
    """The state of one bulk load."""

    def __init__(
        self,
        client: RyngClient,
        campaign_id: str | int,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        *,
        batch_size: int,
        max_batch_bytes: int,
        concurrency: int,
        rate_limit: float | None,
        on_progress: ProgressHook | None,
        dedupe: bool,
        max_consecutive_failures: int | None,
        report: BulkReport | None,
        request_options: dict[str, Any],
    ) -> None:
        self.client = client
        self.url = URL(client.campaign_url(campaign_id), encoded=True)
        self.batch_size = _check_int(batch_size, "batch_size")
        self.concurrency = _check_int(concurrency, "concurrency")
        template = BodyTemplate(build_request(**request_options))
        _check_int(max_batch_bytes, "max_batch_bytes", template.overhead + 2)
        self.packer = Packer(template, self.batch_size, max_batch_bytes)
        # A load's own rate replaces the client's, but a server's Retry-After still pauses
        # everything the client sends.
        self.pacer = (
            client._pacer
            if rate_limit is None
            else RatePacer(check_rate(rate_limit), pauses=client._pacer)
        )
        check_hook(on_progress, "on_progress")
        self.on_progress = on_progress
        if max_consecutive_failures is not None:
            _check_int(max_consecutive_failures, "max_consecutive_failures")
        self.max_consecutive_failures = max_consecutive_failures
        self.consecutive_failures = 0
        self.input_done = False
        self.seen: set[str] | None = set() if dedupe else None
        if not isinstance(leads, AsyncIterable | Iterable) or isinstance(
            leads, str | bytes | Mapping
        ):
            raise ValidationError(
                f"must be an iterable or async iterable of leads, got {type(leads).__name__}",
                field="leads",
            )
        self.leads = leads
        self.report = report if report is not None else BulkReport()
        if self.report.finished or self.report.total:
            raise ConfigurationError("report= must be a new, empty BulkReport")
        self.report.campaign_id = str(campaign_id)
        self.report.restart_clock()
        self.headers = client._json_headers
        self.position = 0
        self.held: list[Any] = []
        self.unfinished: dict[int, Batch] = {}
        self.exchanges: dict[int, Exchange] = {}
        self.stop_signal = StopSignal()
        self.fatal: BaseException | None = None
        self.emit: Callable[[BatchResult], Any] | None = None

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
            for batch in self.take():
                await send.send(batch)
        if not self.stopping:
            for batch in self.flush():
                await send.send(batch)

    async def _read_async(self, source: AsyncIterable[Any], send: ObjectSendStream[Batch]) -> None:
        iterator = aiter(source)
        exhausted = False
        try:
            while not self.stopping and not exhausted:
                await _let_senders_run()
                async for lead in iterator:
                    self.held.append(lead)
                    if len(self.held) >= self.batch_size:
                        break
                else:
                    exhausted = self.input_done = True
                for batch in self.take():
                    await send.send(batch)
            if not self.stopping:
                for batch in self.flush():
                    await send.send(batch)
        finally:
            # Close an async generator we stopped reading here, in this task, rather than
            # leave it to a garbage-collection hook in another task.
            aclose = getattr(iterator, "aclose", None)
            if not exhausted and aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    def take(self) -> list[Batch]:
        """Validate and pack the leads read so far; return (and hold) the batches made."""
        chunk, self.held = self.held, []
        start = self.position
        self.position += len(chunk)
        self.report.total += len(chunk)
        if self.seen is None and leads_are_valid(chunk):
            rows = chunk
            positions = list(range(start, start + len(chunk)))
        else:
            rows, positions = self._validate_each(chunk, start)
        return self._track(self.packer.add(rows, positions))

    def flush(self) -> list[Batch]:
        return self._track(self.packer.finish())

    def _track(self, batches: list[Batch]) -> list[Batch]:
        if self.packer.invalid:
            self.report.record_invalid(self.packer.invalid)
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
        for position, lead in enumerate(chunk, start):
            try:
                row = validate_lead(lead, position)
            except ValidationError as exc:
                invalid.append(InvalidLead(position=position, field=exc.field, reason=exc.reason))
                continue
            if self.seen is not None:
                number = row["number"]
                if number in self.seen:
                    invalid.append(
                        InvalidLead(
                            position=position,
                            field="number",
                            reason=f"duplicate of an earlier lead in this load: {number}",
                        )
                    )
                    continue
                self.seen.add(number)
            rows.append(row)
            positions.append(position)
        self.report.record_invalid(invalid)
        return rows, positions

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
        exchange = Exchange(campaign_id=self.report.campaign_id, batch_index=batch.index)
        self.exchanges[batch.index] = exchange
        started = time.perf_counter()
        body = batch.body
        outcome = Outcome.ACCEPTED
        error: RyngError | None = None
        try:
            response = await self.client._send(
                exchange,
                self.url,
                lambda: body,
                self.headers,
                pacer=self.pacer,
                stop=self.stop_signal,
            )
            message = response.message
        except SendStoppedError:
            outcome = _outcome(exchange, Outcome.SKIPPED)
            message = f"not sent: {self.report.stop_reason}"
        except ConfigurationError as exc:  # the client was closed under the load
            outcome = _outcome(exchange, Outcome.SKIPPED)
            message = f"not sent: {exc}"
            self.fail(exc, str(exc))
        except RyngError as exc:
            error = exc
            message = exc.message if isinstance(exc, APIError) else str(exc)
            outcome = _outcome(exchange, Outcome.FAILED)
            if isinstance(exc, AuthenticationError):
                self.fail(exc, "403: the access token was refused")
        except Exception as exc:  # an on_retry hook raised: stop, raise it once settled
            # It raised while handling the attempt's own error: that error is the batch's.
            context = exc.__context__
            error = context if isinstance(context, RyngError) else None
            outcome = _outcome(exchange, Outcome.FAILED)
            message = f"stopped: {type(exc).__name__}: {exc}"
            self.fail(exc, f"a hook raised {type(exc).__name__}: {exc}")
        self._count_failures(outcome)
        return self._result(
            batch=batch,
            outcome=outcome,
            exchange=exchange,
            message=message,
            error=error,
            started=started,
        )

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
        return BatchResult(
            index=batch.index,
            start=batch.start,
            count=batch.count,
            outcome=outcome,
            status=None if exchange is None else exchange.status,
            message=message,
            attempts=0 if exchange is None else exchange.attempts,
            elapsed=0.0 if started is None else time.perf_counter() - started,
            error=error,
            leads=() if outcome is Outcome.ACCEPTED else tuple(batch.rows),
        )

    async def finish_batch(self, batch: Batch, result: BatchResult) -> None:
        self.record(batch, result)
        if self.emit is not None:
            # A consumer that left does not need it; the report has it.
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.emit(result)

    def record(self, batch: Batch, result: BatchResult) -> None:
        del self.unfinished[batch.index]
        self.exchanges.pop(batch.index, None)
        self.report.record(result)
        if self.on_progress is not None:
            try:
                self.on_progress(self.report.progress(self.pacer.rate))
            except Exception as exc:
                self.fail(exc, f"on_progress raised {type(exc).__name__}: {exc}")

    def fail(self, exc: BaseException, reason: str) -> None:
        """Stop sending new requests; ``exc`` is raised once the load has settled."""
        if self.fatal is not None:
            return
        self.fatal = exc
        self.stop_signal.fire()
        self.report.stop(reason)
        level = logging.DEBUG if isinstance(exc, _StreamClosedError) else logging.WARNING
        logger.log(level, "bulk load of campaign %s stops: %s", self.report.campaign_id, reason)

    # -- ending ----------------------------------------------------------------------

    def settle(self) -> None:
        """Account for every lead read but not yet in an outcome; end the report.

        Runs in a ``finally``: plain synchronous code, safe while a cancel is pending.
        """
        if not self.input_done or self.held or self.packer.pending or self.unfinished:
            if not self.stopping:
                self.report.stop("cancelled")
            if self.held:
                self.take()
            self.flush()
        for index in sorted(self.unfinished):
            batch = self.unfinished[index]
            exchange = self.exchanges.get(index)
            outcome = _outcome(exchange, Outcome.SKIPPED)
            message = (
                "cancelled after sending: may have been appended"
                if outcome is Outcome.UNKNOWN
                else f"not sent: {self.report.stop_reason}"
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
        self.report.finish()


class BulkOptions(TypedDict, total=False):
    """The keyword options of `RyngClient.bulk_append` and `RyngClient.stream_append`.

    Keys:
        batch_size: most leads per request (default 500).
        max_batch_bytes: most bytes per request body (default 4 MiB); a lead that cannot
            fit alone is invalid.
        concurrency: most requests in flight (default 8).
        rate_limit: requests per second for this load; None (default) uses the client's.
        checkpoint: a path to an SQLite journal for resumable loads (not available yet).
        on_progress: a plain callable given a `Progress` after every batch.
        dedupe: refuse a lead whose number was already sent in this load, as invalid.
        max_consecutive_failures: stop the load after this many batches in a row end
            failed or unknown (default 20); None never stops.
        report: a new `BulkReport` to fill live; keep a reference to read it after a
            cancel or an error.
        name, agent_mapping, agents, custom_field_names, terminal_callback_url,
        connect_callback_url: the campaign options of `RyngClient.append`.
    """

    batch_size: int
    max_batch_bytes: int
    concurrency: int
    rate_limit: float | None
    checkpoint: str | None
    on_progress: ProgressHook | None
    dedupe: bool
    max_consecutive_failures: int | None
    report: BulkReport | None
    name: str | None
    agent_mapping: AgentMapping | str | None
    agents: Sequence[str] | None
    custom_field_names: Mapping[str, str] | None
    terminal_callback_url: str | None
    connect_callback_url: str | None


_REQUEST_OPTIONS = (
    "name",
    "agent_mapping",
    "agents",
    "custom_field_names",
    "terminal_callback_url",
    "connect_callback_url",
)


def _new_load(
    client: RyngClient,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
    caller: str,
) -> _Load:
    unknown = sorted(options.keys() - BulkOptions.__annotations__.keys())
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments: {', '.join(unknown)}")
    if options.get("checkpoint") is not None:
        raise ConfigurationError("checkpoint= (resumable loads) is not available yet")
    client._get_session()  # a closed client refuses before reading anything
    return _Load(
        client,
        campaign_id,
        leads,
        batch_size=options.get("batch_size", DEFAULT_BATCH_SIZE),
        max_batch_bytes=options.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES),
        concurrency=options.get("concurrency", DEFAULT_CONCURRENCY),
        rate_limit=options.get("rate_limit"),
        on_progress=options.get("on_progress"),
        dedupe=options.get("dedupe", False),
        max_consecutive_failures=options.get(
            "max_consecutive_failures", DEFAULT_MAX_CONSECUTIVE_FAILURES
        ),
        report=options.get("report"),
        request_options={key: options.get(key) for key in _REQUEST_OPTIONS},
    )


async def _run(load: _Load) -> BulkReport:
    """Run a load to its end and return its report; raise what stopped it, if anything."""
    try:
        send, receive = anyio.create_memory_object_stream[Batch](0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(load.read, send)
            async with receive:
                for _ in range(load.concurrency):
                    tasks.start_soon(load.send_all, receive.clone())
    finally:
        load.settle()
    if load.fatal is not None and not isinstance(
        load.fatal, _StreamClosedError | _TooManyFailuresError
    ):
        if isinstance(load.fatal, RyngError):
            load.fatal.report = load.report
        else:
            load.fatal.add_note(f"ryng_async: partial bulk report: {load.report}")
        raise load.fatal
    return load.report


async def bulk_append(
    client: RyngClient,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
) -> BulkReport:
    """Run a bulk load and return its `BulkReport` (see `RyngClient.bulk_append`)."""
    return await _run(_new_load(client, campaign_id, leads, options, "bulk_append"))


class BatchStream:
    """The `BatchResult` s of a load, in completion order, as an async iterator.

    Also an async context manager: ``async with client.stream_append(...) as results``
    guarantees the load is stopped and settled when the block exits, even on ``break``.
    Prefer it whenever the loop may end early: an abandoned iterator is only closed by
    the garbage collector, in another task. The load's report is `report`, live; what
    stopped the load (a 403, an input error) is raised from the iteration.
    """

    def __init__(self, load: _Load) -> None:
        self._load = load
        self._iterator = self._results()

    @property
    def report(self) -> BulkReport:
        """The live report of this load."""
        return self._load.report

    async def _results(self) -> AsyncGenerator[BatchResult]:
        send, receive = anyio.create_memory_object_stream[BatchResult](self._load.concurrency)
        self._load.emit = send.send
        failure: list[Exception] = []

        async def run() -> None:
            async with send:
                try:
                    await _run(self._load)
                except Exception as exc:  # raised below, bare, not in an ExceptionGroup
                    failure.append(exc)

        async with receive, anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            async for result in receive:
                yield result
        if failure:
            raise failure[0]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BatchResult:
        return await anext(self._iterator)

    async def aclose(self) -> None:
        """Stop the load (nothing new is sent) and wait for it to settle."""
        if not self._load.report.finished:
            self._load.fail(_StreamClosedError(), "the result stream was closed")
        async with aclosing(self._iterator):
            # Nothing new is sent now; let the requests in flight end with real outcomes.
            async for _ in self._iterator:
                pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _StreamClosedError(Exception):
    """The consumer closed a `BatchStream` early (not an error to raise)."""


class _TooManyFailuresError(Exception):
    """``max_consecutive_failures`` stopped the load (its report says so; not raised)."""


def stream_append(
    client: RyngClient,
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    options: BulkOptions,
) -> BatchStream:
    """Start a bulk load whose results are iterated as they come (see `BatchStream`)."""
    return BatchStream(_new_load(client, campaign_id, leads, options, "stream_append"))
