"""The bulk engine: concurrent, rate-limited sends of the batches its intake packs.

One reader task runs the `Intake`, which reads the input a batch's worth at a time,
validates and packs batches; the load hands each to ``concurrency`` sender tasks through
an unbuffered stream, so the input is read only as fast as batches go out and at most
about ``concurrency + 2`` batches exist. The `Ledger` holds every batch made until its
outcome is recorded and accounts for whatever is left when the load ends (cancel, 403,
input error); with a checkpoint, `Resume` is the load's side of the journal. The
options are read once, into `LoadSettings`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable, Iterable
from contextlib import suppress
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._batching import Batch, Packer
from ._events import BatchPacked, BatchSettled, ExtensionError, LoadEnded, Observers
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ResourceError,
    RyngError,
)
from ._exchange import Exchange, SendStoppedError
from ._intake import Intake, Lot
from ._ledger import Ledger, TooManyFailuresError, outcome_of
from ._models import LeadInput
from ._report import BatchResult, BulkReport, Outcome
from ._resume import Resume
from ._seen import SeenNumbers
from ._sender import Sender
from ._settings import BulkOptions, LoadSettings, check_grace, load_settings
from ._split import CutOff, Splitter, combine, is_too_large, remainder, send_in_parts
from ._stopping import LoadStop, StoppedError
from ._validate import check_keywords, check_lead_source

__all__ = ["BatchStream", "BulkOptions", "run_bulk", "start_stream"]

logger = logging.getLogger("ryng_async")

_T = TypeVar("_T")

# Seconds the end of a load may spend telling observers, even under cancellation (the
# journal's close is not part of it: it always runs, after them).
_TELL_END_TIMEOUT = 30.0


class _Load:
    """One bulk load: sends the batches its intake packs, until done or stopped.

    Its parts: ``settings`` (read once), ``intake`` (reads and packs), ``ledger`` (the
    accounts, in ``report``), ``stop`` (an error or a gentle stop), ``resume`` (the
    checkpoint journal, if any).
    """

    def __init__(
        self,
        sender: Sender,
        settings: LoadSettings,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    ) -> None:
        self.sender = sender
        self.clock = sender.clock
        self.settings = settings
        self.concurrency = settings.concurrency
        self.limiter = settings.limiter
        # A batch refused as too large (413) is sent again in halves: see _split.
        self.split = Splitter(settings.template)
        self.intake = Intake(
            leads,
            packer=Packer(settings.template, settings.batch_size, settings.max_batch_bytes),
            batch_size=settings.batch_size,
            shard=settings.shard,
            seen=SeenNumbers() if settings.dedupe else None,
            normalize=settings.normalize,
        )
        self.stop = LoadStop(
            settings.report,
            event=settings.stop_event,
            grace=settings.stop_grace,
            on_stop=self.intake.stop_reading,
        )
        self.resume = (
            None
            if settings.journal is None
            else Resume(settings.journal, resend_unknown=settings.resend_unknown)
        )
        self.ledger = Ledger(
            settings,
            clock=self.clock,
            stop=self.stop.signal,
            fail=self.stop.fail,
            sent_again=() if self.resume is None else self.resume.sent_again,
        )
        self.report = self.ledger.report
        self.observers = settings.observers
        if self.resume is not None:
            # Last: a request is journalled in flight only once every other observer let it go.
            journal = self.resume.observer(self.ledger.unfinished, self.report)
            self.observers += Observers([journal])
        self.emit: Callable[[BatchResult], Any] | None = None

    # -- reading ---------------------------------------------------------------------

    async def read(self, send: MemoryObjectSendStream[Batch]) -> None:
        """Run the intake, handing each batch it packs on to the senders."""
        async with send:
            try:
                await self.intake.read(partial(self.resume_or_send, send=send), self.stop.signal)
            except Exception as exc:  # the user's iterator failed: stop, keep the report
                self.stop.fail(exc, f"the input raised {type(exc).__name__}: {exc}")

    async def resume_or_send(self, lot: Lot, send: MemoryObjectSendStream[Batch]) -> None:
        """Enter a lot in the ledger; tell the observers of each batch, hand it to a sender.

        With a checkpoint, a batch the journal holds as accepted (or in flight, which may
        be in Ryng) gets its outcome from the journal instead of being sent again.
        """
        for batch in self.ledger.enter(lot):
            if self.stop.fired:
                return  # left unfinished: account_for_the_rest() gives it its outcome
            if self.resume is not None:
                try:
                    resumed = self.resume.prior_result(batch)
                except RyngError as exc:  # the input changed under the journal
                    self.stop.fail(exc, str(exc))
                    return
                if resumed is not None:
                    await self.finish_batch(batch, resumed)
                    continue
            if self.observers.hears(BatchPacked):
                try:
                    await self.observers.emit(
                        BatchPacked(
                            campaign_id=self.report.campaign_id,
                            index=batch.index,
                            start=batch.start,
                            count=batch.count,
                            size=len(batch.body),
                            ranges=batch.ranges,
                        )
                    )
                except ExtensionError as failure:
                    self.fail_extension(failure)
                    return
            await _hand(send, batch)

    # -- sending ---------------------------------------------------------------------

    async def send_all(self, receive: MemoryObjectReceiveStream[Batch]) -> None:
        async with receive:
            while True:
                try:
                    # The reader waiting with a batch: take it now (no loop round trip).
                    batch = receive.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        batch = await receive.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                if self.stop.fired:
                    continue  # left unfinished: account_for_the_rest() marks it skipped
                result = await self.send_one(batch)
                await self.finish_batch(batch, result)

    async def send_one(self, batch: Batch) -> BatchResult:
        """Send one batch; one refused as too large (413) is sent again in halves.

        A batch an earlier run accepted in part (so its journal says) is sent without
        the leads accepted then.
        """
        limit = self.split.limit
        before = self.resume.accepted_before.pop(batch.index, ()) if self.resume else ()
        rest = remainder(batch, before, self.split.template) if before else batch
        if rest is None:  # its parts all accepted; the run that sent them was cut off
            return self.ledger.accepted_earlier(batch, "accepted in parts in an earlier run")
        if rest is not batch:
            self.split.accepted[batch.index] = before
            parts = await self._send_split(batch, rest, None)
            return combine(batch, parts, accepted_before=before)
        first = None
        if limit.fits(len(batch.body)) or batch.count == 1:
            first = await self._send_batch(batch)
            if not is_too_large(first.error) or self.stop.fired:
                if first.outcome is Outcome.ACCEPTED:
                    limit.note_accepted(len(batch.body))
                return first
        return combine(batch, await self._send_split(batch, batch, first))

    async def _send_split(
        self, batch: Batch, rest: Batch, first: BatchResult | None
    ) -> list[BatchResult]:
        """Send ``rest`` (``batch``, or what of it is left) in parts that fit."""
        parts = await send_in_parts(rest, self.split, partial(self._send_part, batch), first=first)
        limit = self.split.limit
        self.report.body_refused, self.report.body_accepted = limit.refused, limit.accepted
        self.split.forget(batch.index)
        return parts

    async def _send_part(self, batch: Batch, part: Batch) -> BatchResult:
        self.split.note_sending(batch.index, part)
        if self.resume is not None:
            self.resume.sending_part(batch.index)
        result = await self._send_batch(part)
        # Cut off from here on, the batch's accepted parts stay accepted, the rest unknown
        # if a part may have been appended.
        self.split.note_part(batch.index, result)
        if result.outcome is Outcome.ACCEPTED and self.resume is not None:
            self.resume.part_accepted(batch.index, result.ranges)
        return result

    async def _send_batch(self, batch: Batch) -> BatchResult:
        exchange = Exchange(campaign_id=self.report.campaign_id, batch_index=batch.index)
        self.ledger.exchanges[batch.index] = exchange
        started = self.clock.now()
        body = batch.body
        error: RyngError | None = None
        try:
            response = await self.sender.send(
                exchange,
                self.settings.url,
                lambda: body,
                limiter=self.limiter,
                observers=self.observers,
                stop=self.stop.signal,
            )
            message = response.message
        except SendStoppedError:
            message = f"not sent: {self.stop.reason}"
        except (ConfigurationError, ResourceError) as exc:  # closed client, no descriptors
            message = f"not sent: {exc}"
            self.stop.fail(exc, str(exc))
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
                self.stop.fail(exc, "403: the access token was refused")
        # Not answered accepted: unknown if it may have been processed; failed if it got
        # a definite error; else (stopped before any attempt went) skipped.
        outcome = outcome_of(exchange, Outcome.SKIPPED if error is None else Outcome.FAILED)
        if batch.count == 1 or not is_too_large(error):  # else sent again in parts
            self.ledger.count_failures(outcome)
        return self.ledger.result(
            batch=batch,
            outcome=outcome,
            exchange=exchange,
            message=message,
            error=None if outcome is Outcome.ACCEPTED else error,
            started=started,
        )

    def fail_extension(self, failure: ExtensionError) -> None:
        """Stop the load for what an observer or the limiter raised (raised once ended)."""
        cause = failure.cause
        self.stop.fail(
            cause, f"{type(cause).__name__} raised by an observer or the limiter: {cause}"
        )

    async def finish_batch(self, batch: Batch, result: BatchResult) -> None:
        """Record a batch's outcome, tell the observers, then the stream's consumer."""
        self.ledger.record(batch, result)
        if self.resume is not None:
            self.resume.forget(batch.index)
        await self.tell_settled(result)
        await self.hand_over(result)

    async def hand_over(self, result: BatchResult) -> None:
        """Give a result to the stream's consumer, if there is one still reading."""
        if self.emit is not None:
            # A consumer that left does not need it; the report has it.
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.emit(result)

    async def tell_settled(self, result: BatchResult) -> None:
        if not self.observers.hears(BatchSettled):
            return
        progress = self.report.progress(self.limiter.rate, self.clock.now())
        try:
            await self.observers.emit(
                BatchSettled(campaign_id=self.report.campaign_id, result=result, progress=progress)
            )
        except ExtensionError as failure:
            self.fail_extension(failure)

    # -- ending ----------------------------------------------------------------------

    def account_for_the_rest(self) -> list[BatchResult]:
        """Give every lead read but not yet in an outcome its outcome; end the report.

        Runs in a ``finally``: plain synchronous code, safe while a cancel is pending.
        Returns the results it recorded, for the observers.
        """
        intake, ledger = self.intake, self.ledger
        if not intake.all_packed or ledger.unfinished:
            if not self.stop.fired:
                self.stop.reason = "cancelled"
                self.report.stop(self.stop.reason)
            if intake.held:
                ledger.enter(intake.pack())
            ledger.enter(intake.pack_rest())
        ended = ledger.close(
            reason=self.stop.reason,
            cut_off=self.cut_off,
            gently_stopped=self.stop.gentle,
            unread_from=None if intake.done else intake.position,
        )
        intake.close()
        return ended

    def cut_off(self, index: int, last: Outcome) -> CutOff | None:
        """How a batch sent in parts, or resumed with parts accepted before, ends cut off."""
        in_parts = self.split.cut_off(index, last)
        if in_parts is None and self.resume is not None:
            before = self.resume.accepted_before.get(index)
            if before:  # not sent yet: its parts an earlier run got accepted stay so
                return CutOff(last, before, False, ())
        return in_parts

    async def end(self) -> Exception | None:
        """Account for the rest, tell the observers (within their time limit), close the journal.

        The journal records the batches ended here first and is closed whatever the
        observers do (a slow one, a cancel): the next run must find it released. Returns
        the close's error (carrying ``.report``) for the caller to raise or note.
        """
        ended = self.account_for_the_rest()
        if self.resume is not None:
            self.resume.record_ended(ended)
        # Shielded and bounded: observers hear how the load ended even under a cancel.
        with anyio.move_on_after(_TELL_END_TIMEOUT, shield=True):
            await self.tell_ended(ended)
        return None if self.resume is None else await self.resume.close(self.report)

    async def tell_ended(self, ended: list[BatchResult]) -> None:
        """Tell of the batches ended at the end (a stream's consumer too), then of the end."""
        for result in ended:
            await self.tell_settled(result)
            await self.hand_over(result)
        if self.observers.hears(LoadEnded):
            try:
                await self.observers.emit(LoadEnded(report=self.report))
            except ExtensionError as failure:
                self.fail_extension(failure)


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
    settings = load_settings(sender, url, campaign_id, options)
    check_lead_source(leads)
    return _Load(sender, settings, leads)


async def _run(load: _Load) -> BulkReport:
    """Run a load to its end and return its report; raise what stopped it, if anything."""
    if load.resume is not None:
        try:
            await load.resume.open(load.settings.identity)
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
    fatal = load.stop.fatal
    if fatal is not None and not isinstance(fatal, StoppedError | TooManyFailuresError):
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
        load.stop.begin(1 + load.concurrency)
        tasks.start_soon(load.stop.watch, tasks.cancel_scope)
        tasks.start_soon(load.stop.worker, load.read, send)
        async with receive:
            for _ in range(load.concurrency):
                tasks.start_soon(load.stop.worker, load.send_all, receive.clone())


async def _hand(send: MemoryObjectSendStream[_T], item: _T) -> None:
    """Hand ``item`` to a receiver waiting (or to the buffer's room) at once, else wait.

    As ``send.send``, without its loop round trip when nothing has to wait: the reader
    yields to the senders before packing the next batch anyway.
    """
    try:
        send.send_nowait(item)
    except anyio.WouldBlock:
        await send.send(item)


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
        load.emit = partial(_hand, self._send)
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
        self._load.stop.gently(
            "stopped on request (BatchStream.stop)",
            None if grace is None else check_grace(grace, "grace"),
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
    load: _Load, send: MemoryObjectSendStream[BatchResult], failure: list[Exception]
) -> None:
    """Run a streamed load to its end; keep what stopped it for the consumer."""
    async with send:
        try:
            await _run(load)
        except Exception as exc:  # raised to the consumer, bare, not in an ExceptionGroup
            failure.append(exc)


def _stop(load: _Load, reason: str) -> None:
    load.stop.gently(reason)


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
