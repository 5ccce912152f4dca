"""The client-wide request pacer: aiolimiter with no start burst, AIMD, and global pauses.

aiolimiter's leaky bucket holds ``max_rate`` tokens and starts empty, so a limiter of
``AsyncLimiter(50, 1)`` lets 50 requests through at once and ~100 in the first second.
We keep a bucket of one token (plus a tenth of slack) drained at ``rate`` per second
instead: requests are spaced ``1 / rate`` apart from the very first, and no window of one
second sees more than ``rate``. The slack lets a request whose wake-up came a little late
(event-loop lag) be made up by the next one, so the long-run rate holds at ``rate``
instead of losing every late millisecond for good (the tolerance of GCRA); a sliding log
of the last ``rate`` send times keeps that catching up from ever putting more than
``rate`` requests in any one second, as a server counting a sliding window would see.

On a 429 the rate halves (never below ``rate / 64``); each success adds back 1/20 of the
configured rate, never above it (additive increase, multiplicative decrease, as TCP). A
client with no rate limit learns one from a 429 (the rate the server accepted in the
second before, restarting at half of it; let go after 30 s without a 429). A ``Retry-After`` pauses
every request of the client, not just the one that got it.
"""

from __future__ import annotations

import math
from collections import deque

import anyio
from aiolimiter import AsyncLimiter

from ._exceptions import ConfigurationError

__all__ = ["RatePacer", "check_rate"]

_SLACK = 0.1
# A touch over a second: a request leaves a little after its slot is granted.
_WINDOW = 1.01
_DECREASE = 0.5
_INCREASE_SHARE = 0.05
_FLOOR_SHARE = 1 / 64
_RECENT = 4096
_RELEASE_AFTER = 30.0
_MIN_LEARNED = 2


def check_rate(rate: float | None, name: str = "rate_limit") -> float | None:
    """Return ``rate`` as a float if it is a number > 0, None if None; else refuse it."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ConfigurationError(
            f"{name} must be a number of requests per second or None, got {rate!r}"
        )
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigurationError(f"{name} must be > 0 requests per second or None, got {rate!r}")
    return float(rate)


class _SpacedLimiter(AsyncLimiter):
    """An `AsyncLimiter` of one token whose drain rate can change while tasks wait."""

    __slots__ = ()

    def __init__(self, rate: float) -> None:
        super().__init__(1 + _SLACK, (1 + _SLACK) / rate)

    def set_rate(self, rate: float) -> None:
        self._leak()  # account for the time elapsed at the old rate first
        self.time_period = self.max_rate / rate
        self._rate_per_sec = rate
        self._wake_next()  # reschedule the next waiter at the new rate


class RatePacer:
    """Paces every request of one client (or of one bulk load that set its own rate).

    With no limit set, a 429 makes the pacer learn one: the requests the server accepted
    in the second before it (about the server's own limit) become the ceiling; sending
    restarts at half that, recovers toward it, and the learned limit is let go after
    `_RELEASE_AFTER` seconds without a 429.

    Args:
        rate: the most requests per second, or None for no limit (pauses still apply).
        pauses: another pacer whose ``Retry-After`` pauses this one shares (a load with
            its own rate still stops when the client is told to wait), or None.
    """

    def __init__(self, rate: float | None, *, pauses: RatePacer | None = None) -> None:
        self.limit = check_rate(rate)
        self._pauses = pauses
        self._own_pause_until = 0.0
        # Success times while no limit is set, to learn one from at a 429.
        self._accepted: deque[float] = deque(maxlen=_RECENT)
        self._last_throttle = 0.0
        self._limiter: _SpacedLimiter | None = None
        self._ceiling: float | None = None
        self._rate: float | None = None
        self._sent: deque[float] = deque(maxlen=1)
        if self.limit is not None:
            self._start_limiter(self.limit, self.limit)

    def _start_limiter(self, rate: float, ceiling: float) -> None:
        self._ceiling = ceiling
        self._rate = rate
        self._limiter = _SpacedLimiter(rate)
        self._sent = deque(maxlen=max(1, math.floor(ceiling)))

    @property
    def _paused_until(self) -> float:
        if self._pauses is not None:
            return self._pauses._paused_until
        return self._own_pause_until

    def _pause(self, seconds: float) -> None:
        if self._pauses is not None:
            self._pauses._pause(seconds)
        else:
            self._own_pause_until = max(self._own_pause_until, anyio.current_time() + seconds)

    @property
    def rate(self) -> float | None:
        """The rate in force now (below the limit after a 429), or None if unlimited."""
        return self._rate

    def must_wait(self) -> bool:
        """Say whether `acquire` may block (a limit is set, or a pause is on)."""
        return self._limiter is not None or self._paused_until > anyio.current_time()

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        # Bounded: each pass sleeps until the latest pause ends; a pause is only extended
        # by a server's Retry-After, itself capped by the retry policy.
        while True:
            while (wait := self._paused_until - anyio.current_time()) > 0:  # noqa: ASYNC110
                await anyio.sleep(wait)
            limiter = self._limiter
            if limiter is not None:
                await limiter.acquire()
                await self._wait_for_window()
            # A pause that began while we queued for the limiter holds us too.
            now = anyio.current_time()
            if self._paused_until <= now:
                if limiter is not None:
                    self._sent.append(now)
                return

    async def _wait_for_window(self) -> None:
        """Wait until the last ``ceiling`` sends all lie more than a second back."""
        sent = self._sent
        # Bounded: each pass waits for the oldest send to leave the window.
        while len(sent) == sent.maxlen and (wait := sent[0] + _WINDOW - anyio.current_time()) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)

    def throttled(self, retry_after: float | None) -> None:
        """Record a 429: lower the rate and pause everyone for ``retry_after`` seconds."""
        if retry_after:
            self._pause(retry_after)
        now = anyio.current_time()
        self._last_throttle = now
        if self._limiter is None or self._rate is None or self._ceiling is None:
            accepted = sum(1 for done in self._accepted if now - done < 1.0)
            # Too little to learn from (a slow server, a first request): pause and
            # backoff only, rather than pin the client to a rate guessed from nothing.
            if accepted >= _MIN_LEARNED:
                self._start_limiter(accepted * _DECREASE, float(accepted))
            return
        self._rate = max(self._rate * _DECREASE, self._ceiling * _FLOOR_SHARE)
        self._limiter.set_rate(self._rate)

    def succeeded(self) -> None:
        """Record a success: raise the rate back toward the limit."""
        now = anyio.current_time()
        if self.limit is None:
            self._accepted.append(now)
        if self._limiter is None or self._rate is None or self._ceiling is None:
            return
        if self._rate < self._ceiling:
            self._rate = min(self._ceiling, self._rate + self._ceiling * _INCREASE_SHARE)
            self._limiter.set_rate(self._rate)
        elif self.limit is None and now - self._last_throttle >= _RELEASE_AFTER:
            self._limiter = None  # a learned limit is let go once 429s have stopped
            self._rate = self._ceiling = None
