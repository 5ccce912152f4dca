"""The clock the SDK reads and sleeps on: real time by default, driven time in tests.

Every wait the SDK decides itself (retry backoff, a ``Retry-After`` pause, the rate
limiter's window and its learned limit) and every timing it reports (a load's elapsed
time) goes through a `Clock`, so a test can run them on a `ryng_async.testing.ManualClock`
instead of reaching into private timing state.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import anyio

__all__ = ["Clock", "EventLoopClock"]


class Clock(Protocol):
    """What the SDK needs of a clock: a monotonic reading and a sleep."""

    def now(self) -> float:
        """Return monotonic seconds (only differences between readings matter)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock (a cancellation point)."""
        ...


class EventLoopClock:
    """The event loop's own clock (`anyio.current_time`, `anyio.sleep`): the default."""

    __slots__ = ()

    def now(self) -> float:
        """Return the event loop's time."""
        # What anyio.current_time() returns on asyncio (aiohttp's only loop), without its
        # backend lookup: a request reads the clock several times.
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on the event loop."""
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "EventLoopClock()"
