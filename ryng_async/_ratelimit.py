"""Rate limiting: the `Limiter` protocol, the default in-process limiter, client pauses.

A request awaits ``limiter.acquire()`` before it goes and reports back with
``throttled(retry_after)`` (a 429) or ``succeeded()``. Every method is async and may raise,
so a limiter that asks a remote store (the Redis-backed one of ``ryng_async[redis]``) fits
as naturally as the in-process default. A ``Retry-After`` pause is not the limiter's job:
`PauseGate` holds it for the whole client, whatever limiter a load uses.

`AdaptiveLimiter`, the default, is built from three parts, each on its own:

- `_Spacing`: aiolimiter's `AsyncLimiter` as a bucket of one request plus a tenth of slack,
  drained at ``rate``: requests are spaced ``1 / rate`` apart from the very first (no start
  burst, unlike a bucket of ``rate`` tokens), and a wake-up that came a little late is made
  up by the next request, so the long-run rate holds (the tolerance of GCRA). A new rate
  gets a new bucket, charged with the request just sent, and waiters move over to it.
- `_SlidingWindow`: a log of the last ``ceiling`` send times, so that catching up never puts
  more than ``ceiling`` requests in any one second, as a server counting a sliding window
  would see.
- AIMD in `AdaptiveLimiter` itself: a 429 halves the rate (never below ``ceiling / 64``);
  each success adds back 1/20 of the ceiling (additive increase, multiplicative decrease,
  as TCP). A limiter with no limit learns one from a 429 (what the server accepted in the
  second before, restarting at half of it) and lets it go after 30 s without a 429.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol, runtime_checkable

from aiolimiter import AsyncLimiter

from ._clock import Clock, EventLoopClock
from ._validate import check_rate

__all__ = ["AdaptiveLimiter", "Limiter", "PauseGate"]

_SLACK = 0.1
# A touch over a second: a request leaves a little after its slot is granted.
_WINDOW = 1.01
_DECREASE = 0.5
_INCREASE_SHARE = 0.05
_FLOOR_SHARE = 1 / 64
_RECENT = 4096
_RELEASE_AFTER = 30.0
_MIN_LEARNED = 2


@runtime_checkable
class Limiter(Protocol):
    """What every request awaits before it is sent, and the feedback it gives back.

    Pass any object with these four members as ``RyngClient(limiter=...)`` or
    ``bulk_append(limiter=...)``. Each method may raise: the error ends the request (and
    in a bulk load, stops the load) like any other.
    """

    @property
    def rate(self) -> float | None:
        """The rate in force now, in requests per second (for progress), or None."""
        ...

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        ...

    async def throttled(self, retry_after: float | None) -> None:
        """Record a 429; ``retry_after`` is the server's ``Retry-After`` in seconds, if any."""
        ...

    async def succeeded(self) -> None:
        """Record a request the server accepted."""
        ...


class PauseGate:
    """Holds every request of a client while a server's ``Retry-After`` runs."""

    __slots__ = ("_clock", "until")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold requests for ``seconds`` from now (a longer pause already on is kept)."""
        self.until = max(self.until, self._clock.now() + seconds)

    def is_open(self) -> bool:
        """Say whether a request may go now."""
        return self.until <= self._clock.now()

    async def wait(self) -> None:
        """Wait until no pause is on."""
        # Bounded: each pass sleeps until the latest pause ends; a pause is only extended
        # by a server's Retry-After, itself capped by the retry policy.
        while (wait := self.until - self._clock.now()) > 0:
            await self._clock.sleep(wait)

    async def admit(self, limiter: Limiter) -> None:
        """Wait out any pause, then for ``limiter``; again if a pause began meanwhile."""
        # Bounded: a pass repeats only if a pause began while we queued for the limiter.
        while True:
            await self.wait()
            await limiter.acquire()
            if self.is_open():
                return


class _Spacing:
    """Spaces requests ``1 / rate`` apart with aiolimiter (its public API only)."""

    __slots__ = ("_bucket", "_charge_next")

    def __init__(self, rate: float) -> None:
        self._bucket = AsyncLimiter(1 + _SLACK, (1 + _SLACK) / rate)
        self._charge_next = False

    def set_rate(self, rate: float) -> None:
        self._bucket = AsyncLimiter(1 + _SLACK, (1 + _SLACK) / rate)
        self._charge_next = True

    async def acquire(self) -> None:
        # Bounded: a pass repeats only if the rate changed while this task waited.
        while True:
            bucket = self._bucket
            if self._charge_next:
                # A new bucket starts empty: charge it with the request just sent under the
                # old rate, so the switch is not a burst. The bucket has room: no wait.
                self._charge_next = False
                await bucket.acquire()
            await bucket.acquire()
            if bucket is self._bucket:
                return


class _SlidingWindow:
    """Keeps any one-second window to at most ``size`` requests."""

    __slots__ = ("_clock", "_sent")

    def __init__(self, size: float, clock: Clock) -> None:
        self._sent: deque[float] = deque(maxlen=max(1, math.floor(size)))
        self._clock = clock

    async def wait(self) -> None:
        """Wait until the last ``size`` sends all lie more than a second back."""
        sent = self._sent
        # Bounded: each pass waits for the oldest send to leave the window.
        while len(sent) == sent.maxlen and (wait := sent[0] + _WINDOW - self._clock.now()) > 0:
            await self._clock.sleep(wait)

    def record(self) -> None:
        self._sent.append(self._clock.now())


class AdaptiveLimiter:
    """The default `Limiter`: spaced, windowed, and adapting to 429s (AIMD).

    With no limit set, a 429 makes it learn one: the requests the server accepted in the
    second before it (about the server's own limit) become the ceiling; sending restarts
    at half that, recovers toward it, and the learned limit is let go after 30 seconds
    without a 429.

    Args:
        rate: the most requests per second, or None for no limit until a 429 sets one.
        clock: the clock of the window and the learned limit (the event loop's by default).
    """

    def __init__(self, rate: float | None = None, *, clock: Clock | None = None) -> None:
        self.limit = check_rate(rate)
        self._clock: Clock = clock or EventLoopClock()
        # Success times while no limit is set, to learn one from at a 429.
        self._accepted: deque[float] = deque(maxlen=_RECENT)
        self._last_throttle = 0.0
        self._spacing: _Spacing | None = None
        self._window: _SlidingWindow | None = None
        self._ceiling: float | None = None
        self._rate: float | None = None
        if self.limit is not None:
            self._start(self.limit, self.limit)

    def __repr__(self) -> str:
        return f"<AdaptiveLimiter limit={self.limit!r} rate={self._rate!r}>"

    def _start(self, rate: float, ceiling: float) -> None:
        self._ceiling = ceiling
        self._rate = rate
        self._spacing = _Spacing(rate)
        self._window = _SlidingWindow(ceiling, self._clock)

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        if self._spacing is not None:
            self._spacing.set_rate(rate)

    @property
    def rate(self) -> float | None:
        """The rate in force now (below the limit after a 429), or None if unlimited."""
        return self._rate

    @property
    def ceiling(self) -> float | None:
        """The limit the rate recovers to: the configured one, or one learned from a 429."""
        return self._ceiling

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        spacing, window = self._spacing, self._window
        if spacing is None or window is None:
            return
        await spacing.acquire()
        await window.wait()
        window.record()

    async def throttled(self, retry_after: float | None) -> None:
        """Record a 429: halve the rate, or learn a limit if none is set."""
        now = self._clock.now()
        self._last_throttle = now
        if self._rate is None or self._ceiling is None:
            accepted = sum(1 for done in self._accepted if now - done < 1.0)
            # Too little to learn from (a slow server, a first request): pause and
            # backoff only, rather than pin the client to a rate guessed from nothing.
            if accepted >= _MIN_LEARNED:
                self._start(accepted * _DECREASE, float(accepted))
            return
        self._set_rate(max(self._rate * _DECREASE, self._ceiling * _FLOOR_SHARE))

    async def succeeded(self) -> None:
        """Record a success: raise the rate back toward the ceiling."""
        now = self._clock.now()
        if self.limit is None:
            self._accepted.append(now)
        if self._rate is None or self._ceiling is None:
            return
        if self._rate < self._ceiling:
            self._set_rate(min(self._ceiling, self._rate + self._ceiling * _INCREASE_SHARE))
        elif self.limit is None and now - self._last_throttle >= _RELEASE_AFTER:
            # A learned limit is let go once 429s have stopped.
            self._spacing = self._window = None
            self._rate = self._ceiling = None
