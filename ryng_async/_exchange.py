"""The state of one request as it is tried, and the signal that stops a load's waits.

Shared by the client (which fills an `Exchange` as it retries) and the bulk engine
(which reads it to tell, after a cancel or a stop, whether a batch may have been sent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ._models import AppendResponse

__all__ = ["Exchange", "SendStoppedError", "StopSignal"]


@dataclass(slots=True)
class Exchange:
    """What happened to one request so far; read by the bulk engine, even after a cancel.

    Attributes:
        campaign_id: the campaign sent to.
        batch_index: the bulk batch, or None.
        attempts: attempts started.
        maybe_processed: some attempt may have been processed: one is in flight, or one
            ended without a definite answer (timeout, drop, an unreadable 2xx). Sticky:
            a later definite error does not clear it.
        status: the HTTP status of the last answer, or None.
        maybe_duplicated: an attempt was made after one that may have been processed
            (``retry_ambiguous``): if both reached Ryng, its leads were appended twice.
        response: the accepted answer, once there is one (set before anything else is
            awaited, so a cancel right after it still counts the request accepted).
    """

    campaign_id: str
    batch_index: int | None = None
    attempts: int = 0
    maybe_processed: bool = False
    status: int | None = None
    maybe_duplicated: bool = False
    response: AppendResponse | None = None


class SendStoppedError(Exception):
    """Raised by `Sender.send` when its `StopSignal` fires before a new attempt."""


class StopSignal:
    """Stops the waits of a load's requests (rate pacing, backoff) at once when fired.

    Requests in flight are left to finish: cancelling them would turn answers that are
    on their way into unknown outcomes.
    """

    __slots__ = ("_scopes", "fired")

    def __init__(self) -> None:
        self.fired = False
        self._scopes: set[anyio.CancelScope] = set()

    def fire(self) -> None:
        """Stop every wait now and every later one."""
        self.fired = True
        for scope in self._scopes:
            scope.cancel()

    async def run(self, wait: Callable[[], Awaitable[object]]) -> bool:
        """Await ``wait()`` unless fired first or meanwhile; False if it was stopped."""
        if self.fired:
            return False
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await wait()
            finally:
                self._scopes.discard(scope)
        return not scope.cancel_called
