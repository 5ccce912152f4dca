"""What stops a load: an error (`LoadStop.fail`) or a gentle stop (`LoadStop.gently`).

A gentle stop (the stop event, `BatchStream.stop`, a stream closed early) reads and sends
nothing new and gives the requests in flight ``stop_grace`` seconds; `LoadStop.watch`
cancels the load's work once that grace runs out. An error stops reading and sending at
once and is raised when the load has ended.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._exchange import StopSignal
from ._report import BulkReport
from ._settings import StopEvent

__all__ = ["LoadStop", "StoppedError"]

logger = logging.getLogger("ryng_async")

_STOP_EVENT_REASON = "stopped on request (the stop event was set)"


class StoppedError(Exception):
    """A gentle stop: `BatchStream.stop`, the stop event, a stream closed early (not raised)."""


class LoadStop:
    """The stop of one load.

    Args:
        report: the load's report (says it stopped early, and why).
        event: the load's stop event, or None.
        grace: seconds the requests in flight get after a gentle stop.
        on_stop: called at the first stop (the intake stops waiting for its input).

    Attributes:
        signal: fired at the first stop; stops the waits of the load's requests.
        fatal: what stopped the load first (a `StoppedError` for a gentle stop).
        reason: why it stopped, for the report and the batches not sent.
        grace_ran_out: a gentle stop's grace ran out and the work was cancelled.
    """

    def __init__(
        self,
        report: BulkReport,
        *,
        event: StopEvent | None,
        grace: float,
        on_stop: Callable[[], None],
    ) -> None:
        self.report = report
        self.event = event
        self.grace = grace
        self.on_stop = on_stop
        self.signal = StopSignal()
        self.fatal: BaseException | None = None
        self.reason: str | None = None
        self.grace_ran_out = False
        self._grace_asked: float | None = None  # the shortest grace asked before the load ran
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: anyio.Event | None = None
        self._stop_deadline = math.inf
        self._grace_scope: anyio.CancelScope | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._workers = 0

    @property
    def fired(self) -> bool:
        """The load is stopping."""
        return self.signal.fired

    @property
    def gentle(self) -> bool:
        """The load stopped gently (not on an error)."""
        return isinstance(self.fatal, StoppedError)

    def fail(self, exc: BaseException, reason: str) -> None:
        """Stop reading and sending; ``exc`` is raised once the load has ended.

        The first reason stands, except that an error (a 403, an observer's exception)
        after a gentle stop is still raised.
        """
        if self.fatal is not None and (
            isinstance(exc, StoppedError) or not isinstance(self.fatal, StoppedError)
        ):
            return
        self.fatal = exc
        self.signal.fire()
        self.on_stop()
        self.reason = reason
        if not isinstance(exc, StoppedError):
            self.report.stop(reason)
        # else: the ledger says the load stopped early only if something was left undone.
        level = logging.DEBUG if isinstance(exc, StoppedError) else logging.WARNING
        logger.log(
            level,
            "bulk load of campaign %s stops: %s",
            self.report.campaign_id,
            reason,
            extra={"ryng_load_stop": True},  # the CLI's summary says it: not said twice
        )

    def gently(self, reason: str, grace: float | None = None) -> None:
        """Read and send nothing new; cancel the requests in flight after ``grace`` seconds.

        ``grace`` None is the load's ``stop_grace``. Called again, the shorter grace wins.
        Synchronous, from the event loop's thread (a task or a callback).
        """
        if self.report.finished:
            return
        self.fail(StoppedError(), reason)
        grace = self.grace if grace is None else grace
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

    def begin(self, workers: int) -> None:
        """Prepare the gentle stop, in the load's task group as it starts ``workers`` tasks."""
        self._loop = asyncio.get_running_loop()
        self._stop_asked = anyio.Event()
        self._watch_scope = anyio.CancelScope()
        self._workers = workers
        if self._grace_asked is not None:  # stopped before it ran
            grace, self._grace_asked = self._grace_asked, None
            self.gently(self.reason or "stopped on request", grace)
        if self.event is not None and self.event.is_set():
            self.gently(_STOP_EVENT_REASON)

    async def watch(self, work: anyio.CancelScope) -> None:
        """Stop on the stop event; cancel ``work`` once a gentle stop's grace has run out.

        Runs beside the reader and senders until the last of them ends.
        """
        assert self._watch_scope is not None  # noqa: S101 - set by begin()
        with self._watch_scope:
            async with anyio.create_task_group() as watchers:
                if self.event is not None:
                    watchers.start_soon(self._on_stop_event, self.event)
                assert self._stop_asked is not None  # noqa: S101 - set by begin()
                await self._stop_asked.wait()
                with anyio.CancelScope(deadline=self._stop_deadline) as self._grace_scope:
                    await anyio.sleep_forever()
                self._grace_scope = None
                self.grace_ran_out = True
                self.reason = (
                    f"{self.reason}; the requests still in flight when the stop's grace "
                    "ran out were cancelled"
                )
                logger.warning(
                    "bulk load of campaign %s: the requests still in flight when the stop's "
                    "grace ran out are cancelled (they end unknown)",
                    self.report.campaign_id,
                )
                work.cancel()

    async def _on_stop_event(self, event: StopEvent) -> None:
        await event.wait()
        self.gently(_STOP_EVENT_REASON)

    async def worker(self, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run the reader or a sender; the last of them to end ends the watch."""
        try:
            await work(*args)
        finally:
            self._workers -= 1
            if self._workers <= 0 and self._watch_scope is not None:
                self._watch_scope.cancel()
