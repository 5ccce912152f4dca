"""Rate limiting: the `Limiter` protocol, the default in-process limiter, client pauses.

A request awaits ``limiter.acquire()`` before it goes and reports back with
``throttled(retry_after)`` (a 429, or a 503: a proxy's rate limit, RFC 9110) or
``succeeded()``. Every method is async and may raise,
so a limiter that asks a remote store (the Redis-backed one of ``ryng_async[redis]``) fits
as naturally as the in-process default. A ``Retry-After`` pause is not the limiter's job:
`PauseGate` holds it for the whole client, whatever limiter a load uses.

`AdaptiveLimiter`, the default, is built from four parts, each on its own:

- `_Spacing`: aiolimiter's `AsyncLimiter` as a bucket of one request plus a tenth of slack,
  drained at ``rate``: requests are spaced ``1 / rate`` apart from the very first (no start
  burst, unlike a bucket of ``rate`` tokens), and a wake-up that came a little late is made
  up by the next request, so the long-run rate holds (the tolerance of GCRA). A new rate
  gets a new bucket, charged with the request just sent, and waiters move over to it.
- `_SlidingWindow`: a log of the last ``ceiling`` send times, so that catching up never puts
  more than ``ceiling`` requests in any one second, as a server counting a sliding window
  would see.
- `_Answers`: the answers (accepted or 429) of the last second, which tell an isolated 429
  (a pause) from a server pushing back (pressure).
- AIMD in `AdaptiveLimiter` itself (additive increase, multiplicative decrease, as TCP).

A 429 is first a pause: its ``Retry-After`` (held by `PauseGate`) or the retry's backoff.
The rate changes only under *pressure*: 429s that keep coming, a second one within a second
of the previous one (or of the end of its pause) that either carries a ``Retry-After`` again
(the pause did not help) or makes 429s at least a tenth of the last second's answers (three
at least). Random 429s on a small share of requests are retried and cost no rate. Under
pressure the rate halves (once a second at most, never below ``ceiling / 64``; a learned
limit after a pause is handled as below); each success adds back 1/20 of the ceiling.

A limiter with no limit learns one under pressure, from a full second of answers only (a
429 a fraction of a second into a load says nothing about a per-second limit): the requests
the server accepted in that second become the ceiling; sending goes on at it after a pause
that did not help (the pause already slowed it), at half of it otherwise. A learned ceiling
then moves with the evidence:

- paused again after a whole second at the ceiling, it comes down to what the server took
  if that was clearly less; if the server took all we sent and paused us anyway, it comes
  down 5% (a limit right at the ceiling), and if that happens again within 30 s, the
  429s are not about our rate: the learned limit is let go (pauses only, for 30 s);
- after a quiet spell at the ceiling (10 s) it probes upward by a tenth; a pause or pressure
  while the raise is on trial undoes it and doubles the spell (up to 30 s);
- it is let go after 30 s without any 429.
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
_RELEASE_AFTER = 30.0
_MIN_LEARNED = 2
# Pressure: 429s that make up this share of a second's answers, and at least this many.
_PRESSURE_SHARE = 0.1
_PRESSURE_COUNT = 3
# Probing a learned ceiling upward: this much more, after this long quiet at the ceiling
# (doubled after a raise that was pushed back, up to the longest).
_PROBE_STEP = 0.1
_PROBE_QUIET = 10.0
_PROBE_QUIET_MAX = 30.0
# Paused at a learned ceiling, the server "took less" than it below this share (less one).
_TOOK_LESS = 0.9
# How far below a limit met right at the learned ceiling the ceiling goes.
_BELOW_LIMIT = 0.95


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
        """Record a 429 or a 503; ``retry_after`` is its ``Retry-After`` in seconds, if any."""
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

    def resize(self, size: float) -> None:
        """Hold ``size`` requests a second from now on, keeping the sends already logged."""
        self._sent = deque(self._sent, maxlen=max(1, math.floor(size)))

    async def wait(self) -> None:
        """Wait until the last ``size`` sends all lie more than a second back."""
        sent = self._sent
        # Bounded: each pass waits for the oldest send to leave the window.
        while len(sent) == sent.maxlen and (wait := sent[0] + _WINDOW - self._clock.now()) > 0:
            await self._clock.sleep(wait)

    def record(self) -> None:
        self._sent.append(self._clock.now())


class _Answers:
    """The answers of the last second (accepted, or 429), counted as they come and go."""

    __slots__ = ("_log", "accepted", "since", "throttled")

    def __init__(self) -> None:
        self._log: deque[tuple[float, bool]] = deque()
        self.accepted = 0
        self.throttled = 0
        self.since: float | None = None  # the first answer observed

    def add(self, now: float, *, throttled: bool) -> None:
        """Log one answer at ``now`` and forget those older than the window."""
        if self.since is None:
            self.since = now
        self._log.append((now, throttled))
        if throttled:
            self.throttled += 1
        else:
            self.accepted += 1
        log = self._log
        # Bounded: each pass drops one answer logged before.
        while log and now - log[0][0] >= _WINDOW:
            _, was_throttled = log.popleft()
            if was_throttled:
                self.throttled -= 1
            else:
                self.accepted -= 1

    def full(self, now: float) -> bool:
        """Say whether answers have been observed for a whole window."""
        return self.since is not None and now - self.since >= _WINDOW

    def crowded(self) -> bool:
        """Say whether 429s make up a share of the window's answers that is no accident."""
        throttled = self.throttled
        return throttled >= _PRESSURE_COUNT and throttled >= _PRESSURE_SHARE * (
            throttled + self.accepted
        )


class AdaptiveLimiter:
    """The default `Limiter`: spaced, windowed, and adapting to 429s (AIMD).

    An isolated 429 is a pause only (its ``Retry-After``, or the retry's backoff); the rate
    changes when 429s keep coming (see the module's docstring for the rule). With no limit
    set, such pressure makes it learn one from a full second of answers: what the server
    accepted in it becomes the ceiling, sending restarts at half that and recovers toward it;
    a learned ceiling probes upward after a quiet spell and is let go after 30 seconds
    without a 429.

    Args:
        rate: the most requests per second, or None for no limit until a 429 sets one.
        clock: the clock of the window, the pressure and the learned limit (the event
            loop's by default).
    """

    def __init__(self, rate: float | None = None, *, clock: Clock | None = None) -> None:
        self.limit = check_rate(rate)
        self._clock: Clock = clock or EventLoopClock()
        self._answers = _Answers()
        self._last_throttle: float | None = None
        self._pause_end = -math.inf
        self._last_decrease = -math.inf
        self._spacing: _Spacing | None = None
        self._window: _SlidingWindow | None = None
        self._ceiling: float | None = None
        self._rate: float | None = None
        # Probing a learned ceiling upward: when it last changed, the ceiling before the
        # last raise (None once the raise held), and the quiet spell before the next.
        self._ceiling_since = 0.0
        self._at_ceiling_since = math.inf  # since when the rate has been at the ceiling
        self._before_probe: float | None = None
        self._probe_quiet = _PROBE_QUIET
        self._learn_after = -math.inf  # paused 429s learn nothing before then
        self._took_all_at = -math.inf  # last paused at the ceiling with all sent accepted
        if self.limit is not None:
            self._start(self.limit, self.limit)

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimiter limit={self.limit!r} ceiling={self._ceiling!r} rate={self._rate!r}>"
        )

    def _start(self, rate: float, ceiling: float) -> None:
        self._ceiling = ceiling
        self._spacing = _Spacing(rate)
        self._window = _SlidingWindow(ceiling, self._clock)
        self._rate = rate
        if self.limit is None:  # learned: track it for probing (no clock read at __init__)
            self._ceiling_since = self._clock.now()
            self._set_rate(rate)

    def _set_rate(self, rate: float) -> None:
        previous, self._rate = self._rate, rate
        if self._spacing is not None and previous != rate:
            self._spacing.set_rate(rate)
        if self.limit is not None:
            return
        ceiling = self._ceiling
        if ceiling is None or rate < ceiling:
            self._at_ceiling_since = math.inf
        elif math.isinf(self._at_ceiling_since):
            self._at_ceiling_since = self._clock.now()

    def _release(self) -> None:
        """Let a learned limit go: no pacing until one is learned again."""
        self._spacing = self._window = None
        self._rate = self._ceiling = None
        self._at_ceiling_since = math.inf
        self._before_probe = None
        self._probe_quiet = _PROBE_QUIET
        self._took_all_at = -math.inf

    def _set_ceiling(self, ceiling: float) -> None:
        self._ceiling = ceiling
        self._ceiling_since = self._clock.now()
        self._at_ceiling_since = math.inf  # until the rate is set again
        if self._window is not None:
            self._window.resize(ceiling)

    @property
    def rate(self) -> float | None:
        """The rate in force now (below the limit after a 429), or None if unlimited."""
        return self._rate

    @property
    def ceiling(self) -> float | None:
        """The limit the rate recovers to: the configured one, or one learned from 429s."""
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
        """Record a 429: a pause, or under pressure a lower rate (or a learned limit)."""
        now = self._clock.now()
        answers = self._answers
        answers.add(now, throttled=True)
        previous, self._last_throttle = self._last_throttle, now
        # 429s keep coming: one within a window of the previous (or of its pause's end).
        recurring = previous is not None and now - max(previous, self._pause_end) <= _WINDOW
        paused = retry_after is not None and retry_after > 0
        if paused:
            self._pause_end = max(self._pause_end, now + (retry_after or 0.0))
        crowded = answers.crowded()
        held = self._before_probe
        on_trial = held is not None and now - self._ceiling_since < self._probe_quiet
        if held is not None and on_trial and (paused or (recurring and crowded)):
            # The last raise of a learned ceiling was pushed back: return to the ceiling
            # that held, and wait longer before the next raise.
            self._before_probe = None
            self._last_decrease = now
            self._probe_quiet = min(self._probe_quiet * 2, _PROBE_QUIET_MAX)
            self._set_ceiling(held)
            self._set_rate(min(self._rate or held, held))
            return
        rate, ceiling = self._rate, self._ceiling
        if (
            paused
            and self.limit is None
            and rate is not None
            and ceiling is not None
            and now - self._at_ceiling_since >= _WINDOW
        ):
            # Paused by the server after a whole second at the learned ceiling.
            self._last_decrease = now
            if answers.accepted < ceiling * _TOOK_LESS - 1:
                # It took clearly less than the ceiling lets through: a lower limit.
                self._set_ceiling(max(float(answers.accepted), float(_MIN_LEARNED)))
                self._set_rate(min(rate, self._ceiling or rate))
            elif now - self._took_all_at > _RELEASE_AFTER:
                # It took what we sent and still paused us, once: a limit right at our
                # ceiling (arrival jitter tips it over). Keep a little below it.
                self._took_all_at = now
                self._set_ceiling(max(ceiling * _BELOW_LIMIT, float(_MIN_LEARNED)))
                self._set_rate(min(rate, self._ceiling or rate))
            else:
                # Twice within half a minute: these 429s are not about our rate. Pace no
                # more, and leave such pauses to the pause gate for a while.
                self._release()
                self._learn_after = now + _RELEASE_AFTER
            return
        if not recurring or not (paused or crowded):
            return  # a pause first: the Retry-After, or the retry's backoff
        if now - self._last_decrease < _WINDOW:
            return  # one decrease a window: the answers of one burst are one signal
        if self.limit is not None and rate is not None and ceiling is not None:
            self._last_decrease = now
            self._set_rate(max(rate * _DECREASE, ceiling * _FLOOR_SHARE))
            return
        self._before_probe = None
        # Learn only from a whole second of answers: a per-second limit shows in no less.
        if not answers.full(now) or answers.accepted < _MIN_LEARNED:
            return
        accepted = float(answers.accepted)
        if rate is None or ceiling is None:
            if paused and now < self._learn_after:
                return  # such 429s came whatever our rate: pauses only, for a while
            self._last_decrease = now
            # A pause that did not help: the server lets through about what it accepted in
            # the second; the pause itself already cut the rate, so go on at that.
            self._start(accepted if paused else accepted * _DECREASE, accepted)
            return
        self._last_decrease = now
        if not paused and now - self._at_ceiling_since >= _WINDOW:
            # A ceiling held for a whole second and pushed back is too high.
            ceiling = min(ceiling, accepted)
            self._set_ceiling(ceiling)
        self._set_rate(
            min(rate, ceiling) if paused else max(rate * _DECREASE, ceiling * _FLOOR_SHARE)
        )

    async def succeeded(self) -> None:
        """Record a success: raise the rate back toward the ceiling, or probe above it."""
        now = self._clock.now()
        self._answers.add(now, throttled=False)
        rate, ceiling = self._rate, self._ceiling
        if rate is None or ceiling is None:
            return
        if rate < ceiling:
            self._set_rate(min(ceiling, rate + ceiling * _INCREASE_SHARE))
            return
        if self.limit is not None:
            return
        last = self._last_throttle
        if last is None or now - last >= _RELEASE_AFTER:
            self._release()  # a learned limit is let go once 429s have stopped
            return
        if now - max(self._ceiling_since, self._last_decrease) >= self._probe_quiet:
            if self._before_probe is not None:
                self._probe_quiet = _PROBE_QUIET  # the last raise held
            self._before_probe = ceiling
            raised = max(ceiling * (1 + _PROBE_STEP), ceiling + 1)
            self._set_ceiling(raised)
            self._set_rate(raised)
