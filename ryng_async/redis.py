"""`RedisLimiter`: one rate limit shared by every process that names the same key.

An optional extra (``pip install 'ryng-async[redis]'``: redis-py >= 5, its asyncio
client), imported only with this module:

    from ryng_async import RyngClient
    from ryng_async.redis import RedisLimiter

    limiter = RedisLimiter("redis://127.0.0.1:6379/0", key="acme", rate=10)
    async with limiter, RyngClient(limiter=limiter) as client:
        report = await client.bulk_append("42", leads, shard=(worker, workers))

Every process, thread or host whose limiter names the same ``key`` on the same Redis sends
at ``rate`` requests per second *together*.

**How it decides.** A Lua script, run atomically by Redis, implements GCRA (the generic
cell rate algorithm, ITU-T I.371) as a shaper with no burst tolerance: the shared state
keeps the *theoretical arrival time* (TAT) of the next request; a caller is given the slot
``max(TAT, now)`` and TAT moves one interval on. The script returns how long to wait for
that slot; `acquire` sleeps that long and goes. Requests are thus spaced one interval
apart from the very first (no burst at start, whatever the number of workers), in the
order they asked, with one round trip each. A slot is reserved at most ``horizon``
seconds ahead; past that, the script reserves nothing and says when to ask again. Time
is Redis's own (``TIME``, inside the script), never a worker's clock: hosts whose clocks
disagree still share one schedule; a worker only sleeps a duration.

The interval is ``(1 + margin) / rate``: ``rate`` requests are spread over ``1 + margin``
seconds, so the tens of milliseconds by which the network and the workers' event loops shift
one request against another never put ``rate + 1`` requests into a one-second window of a
server that counts a sliding window. The pace is ``rate / (1 + margin)`` (95% of ``rate``
with the default ``margin`` of 0.05 s).

**Why GCRA in a Lua script, not the `limits` library.** `limits` (fixed window, moving
window, sliding window counter on Redis) answers ``hit()``/``test()``: allowed or not,
now. A bulk load needs *wait until allowed*: with `limits` every waiting request polls,
a window lets its whole quota through at its start (a burst of ``rate`` at once, the very
429 storm this limiter is for), and its Redis strategies stamp entries with each
worker's ``time.time()``. Nor does it hold a shared slow-down or pause. The scripts are a
few dozen lines: one state hash per key, one round trip per request (two when it waited).

**Slowing down together.** Every worker tells the same hash of its 429s, so the fleet
reacts as one client would (the rule of the in-process `AdaptiveLimiter`). A 429 that
comes alone is a pause of the worker that got it (its client holds its ``Retry-After``),
and the others go on taking the slots: a sliding-window server answers such a 429 when a
stall of a few tens of milliseconds bunched some requests, and pausing the whole fleet for
its one-second ``Retry-After`` would cost every worker a second. *Pressure* is 429s that
keep coming: at least three in a second across the fleet, and a tenth of its slots; or a
worker's 429 with a ``Retry-After`` within a second after its own previous pause ended (the
pause did not help). Under pressure the ``Retry-After`` becomes a fleet pause (no slot is
given before it ends) and a shared rate factor halves (once a second at most, never below
1/64); every success anywhere adds back 1/20 (AIMD, as TCP). A ``Retry-After`` longer than
a second is the account's, not a window's edge: it pauses the fleet at once. 429s that
arrive *during* a fleet pause answer requests already in flight when it began: they are
not counted. A fleet pause or a slow-down voids the slots already given out (each slot
carries the state's *epoch*; a request that waited for its slot checks the epoch before it
goes, and asks again if it changed), so the whole fleet stops at once and restarts at the
new pace.

**When Redis fails.** Never an unlimited send:

- Redis unreachable at the first `acquire`: `RedisLimiterError` (a `ResourceError`)
  at once, which stops a load before anything is sent (every batch ``skipped``). With
  ``fallback="local"`` the limiter instead logs a warning and goes on in-process at
  ``rate / expected_workers`` (an `AdaptiveLimiter`), its share if every worker does the
  same.
- Redis lost mid-load: `acquire` retries with backoff for up to ``max_outage`` seconds,
  sending nothing meanwhile; then it raises `RedisLimiterError` (the load stops, its
  remaining batches ``skipped``), or with ``fallback="local"`` falls back as above.
- Redis refuses the credentials or rights (``WRONGPASS``, ``NOAUTH``, ``NOPERM``: a wrong
  password in the URL, none where one is needed, an ACL user without the commands or the
  keys below): `RedisAccessError` at once, a `ConfigurationError` as well as a
  `RedisLimiterError` (the command line exits with 2): the settings are wrong, and no
  retry and no ``fallback`` helps. Its message names the URL, the password masked.
- Redis answers another error (a key holding something else, a read-only replica):
  `RedisLimiterError` at once; retrying cannot help.

An ACL user needs ``+evalsha +script|load +hget +hmget +hset +del +pexpire +time`` on the
keys ``~ryng_async:rate:*`` (the scripts' own commands are checked too).

The state lives in the Redis hash ``ryng_async:rate:<key>``, which expires after ten
minutes unused. Redis >= 5 (scripts replicated by their effects, so ``TIME`` is allowed).

Longer than 600 lines because its Lua scripts (about 130 lines) and this account of how
the fleet decides, slows down and fails belong with the one class that runs them.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio

from ._exceptions import ConfigurationError, ResourceError
from ._ratelimit import AdaptiveLimiter

try:
    import redis as _redis_package
    from redis import exceptions as redis_errors
    from redis.asyncio import Redis
    from redis.asyncio.connection import SSLConnection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "ryng_async.redis needs redis-py >= 5 (its asyncio client): pip install 'ryng-async[redis]'"
    ) from exc

if int(_redis_package.__version__.split(".", 1)[0]) < 5:  # pragma: no cover
    raise ImportError(
        f"ryng_async.redis needs redis-py >= 5, found {_redis_package.__version__}: "
        "pip install 'ryng-async[redis]'"
    )

__all__ = ["FleetState", "RedisAccessError", "RedisLimiter", "RedisLimiterError", "Reservation"]

logger = logging.getLogger("ryng_async.redis")

T = TypeVar("T")

KEY_PREFIX = "ryng_async:rate:"
_TTL_MS = 600_000  # the shared state expires after ten minutes unused
_WINDOW = 1.01  # a touch over a second, as the in-process limiter
_DECREASE = 0.5
_INCREASE = 0.05
_FLOOR = 1 / 64
_PRESSURE_COUNT = 3
_PRESSURE_SHARE = 0.1
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0

# Shared by every script: the time (Redis's, unless a test passes one), numbers, format.
# Numbers go back as strings: Redis turns a Lua number reply into an integer.
_PRELUDE = """
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(value, default)
  if value then return tonumber(value) end
  return default
end
local function fmt(x) return string.format('%.6f', x) end
"""

# GCRA as a shaper, burst tolerance 0: the slot is max(TAT, now, pause end); TAT moves one
# interval on. ARGV: rate, margin, horizon, ttl_ms, now.
_RESERVE = (
    _PRELUDE
    + """
local now = clock(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'pause_until', 'epoch')
local tat, factor = num(s[1], 0), num(s[2], 1)
local pause_until, epoch = num(s[3], 0), num(s[4], 0)
local slot = math.max(tat, now, pause_until)
local ahead = slot - now
local horizon = tonumber(ARGV[3])
if ahead > horizon then
  return {0, fmt(ahead - horizon), fmt(factor), epoch}
end
local interval = (1 + tonumber(ARGV[2])) / (tonumber(ARGV[1]) * factor)
redis.call('HSET', KEYS[1], 'tat', fmt(slot + interval))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, fmt(ahead), fmt(factor), epoch}
"""
)

# A 429, told by any worker. Pressure (the 429s of the fleet's last second are at least
# three and a tenth of its slots, or the worker's own Retry-After did not help) halves the
# shared factor (once a window) and makes the Retry-After a fleet pause; a Retry-After
# longer than a window pauses the fleet at once. Either voids the slots given out (epoch
# + 1) and restarts the schedule after the pause. 429s during a fleet pause answer
# requests in flight when it began: not counted. ARGV: retry_after ('' if none), rate,
# margin, ttl_ms, now, window, decrease, floor, pressure count, pressure share, own
# Retry-After did not help (1 or 0).
_THROTTLE = (
    _PRELUDE
    + """
local now = clock(ARGV[5])
local rate, margin, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local floor = tonumber(ARGV[8])
local s = redis.call('HMGET', KEYS[1], 'factor', 'pause_until', 'epoch', 'last_decrease',
  'burst_start', 'burst_count', 'tat')
local factor, pause_until, epoch = num(s[1], 1), num(s[2], 0), num(s[3], 0)
local last_decrease, burst_start = num(s[4], -1e18), num(s[5], -1e18)
local burst_count, tat = num(s[6], 0), num(s[7], 0)
local retry_after = tonumber(ARGV[1])
local pressure = false
if now >= pause_until then
  if now - burst_start >= window then burst_start, burst_count = now, 0 end
  burst_count = burst_count + 1
  local slots = window * rate * factor / (1 + margin)
  local crowded = burst_count >= math.max(tonumber(ARGV[9]), tonumber(ARGV[10]) * slots)
  pressure = crowded or (ARGV[11] == '1' and retry_after ~= nil)
end
local changed = false
if pressure and now - last_decrease >= window and factor > floor then
  factor = math.max(factor * tonumber(ARGV[7]), floor)
  last_decrease = now
  changed = true
end
if retry_after ~= nil and retry_after > 0 and (pressure or retry_after > window)
    and now + retry_after > pause_until then
  pause_until = now + retry_after
  changed = true
end
if changed then
  epoch = epoch + 1
  tat = math.max(now + (1 + margin) / (rate * factor), pause_until)
end
redis.call('HSET', KEYS[1], 'factor', fmt(factor), 'pause_until', fmt(pause_until),
  'epoch', epoch, 'last_decrease', fmt(last_decrease), 'burst_start', fmt(burst_start),
  'burst_count', burst_count, 'tat', fmt(tat))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {fmt(factor), fmt(math.max(pause_until - now, 0)), epoch}
"""
)

# A success: the shared factor climbs back by a step. ARGV: increase, ttl_ms.
_RECOVER = (
    _PRELUDE
    + """
local factor = num(redis.call('HGET', KEYS[1], 'factor'), 1)
if factor < 1 then
  factor = math.min(1, factor + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'factor', fmt(factor))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return fmt(factor)
"""
)

# A snapshot, times relative to Redis's now. ARGV: now.
_STATE = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'pause_until', 'epoch')
return {fmt(math.max(num(s[1], 0) - now, 0)), fmt(num(s[2], 1)),
  fmt(math.max(num(s[3], 0) - now, 0)), num(s[4], 0)}
"""
)


class RedisLimiterError(ResourceError):
    """The shared rate limit could not be consulted: Redis unreachable, refused, or lost.

    A `ResourceError`: it is a matter of the environment, not of Ryng's answer nor of the
    load's settings, and a retry of the same load fails the same way until Redis is back
    (the command line exits with 4). Raised by `RedisLimiter.acquire`, it stops a bulk load
    with its remaining batches ``skipped``; the error then carries the partial report as
    ``.report``. (Up to 0.1.0 it was a `ConfigurationError`.)
    """


class RedisAccessError(RedisLimiterError, ConfigurationError):
    """Redis refused the limiter's credentials or rights: fix the URL or the ACL user.

    Redis answered ``WRONGPASS`` (a wrong user or password in the URL), ``NOAUTH`` (no
    password where Redis needs one, or one where it has none) or ``NOPERM`` (the ACL user
    lacks a command or the key). The same call fails the same way until the settings
    change, so it is a `ConfigurationError` (the command line exits with 2, not 4) and no
    ``fallback="local"`` hides it; it stays a `RedisLimiterError` for code that catches
    that. The message names the Redis URL with its password masked, never the password.
    """


# Error replies that say "these credentials or rights will never do": redis-py maps
# WRONGPASS and NOAUTH to AuthenticationError and NOPERM to NoPermissionError; the prefixes
# catch a reply that reached us as a bare ResponseError. Redis 7.0 answers a command the
# ACL user may not run inside a script with a plain ERR and this text. AuthorizationError
# is looked up: not every redis-py >= 5 has it.
_CREDENTIAL_REPLIES = ("WRONGPASS", "NOAUTH")
_ACCESS_REPLIES = (*_CREDENTIAL_REPLIES, "NOPERM")
_SCRIPT_DENIED = "The user executing the script can't run this command"
_ACCESS_ERRORS: tuple[type[Exception], ...] = tuple(
    cls
    for cls in (
        redis_errors.AuthenticationError,
        getattr(redis_errors, "AuthorizationError", None),
        getattr(redis_errors, "NoPermissionError", None),
    )
    if cls is not None
)


def _refused_access(exc: BaseException) -> bool:
    if isinstance(exc, _ACCESS_ERRORS):
        return True
    text = str(exc)
    return isinstance(exc, redis_errors.ResponseError) and (
        text.startswith(_ACCESS_REPLIES) or _SCRIPT_DENIED in text
    )


class _LostError(Exception):
    """Redis did not answer (connection refused, dropped, or timed out): maybe transient."""


class _FellBackError(Exception):
    """The limiter just switched to its local share: dispatch the call again."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the shared schedule gave one request.

    Attributes:
        reserved: True if a slot was reserved; False if the queue reaches further ahead
            than the horizon (nothing reserved: ask again after ``wait``).
        wait: seconds to wait for the slot (0: go now), or before asking again.
        factor: the fleet's rate factor (1: full rate; lower after 429s).
        epoch: the state's epoch; a pause or slow-down moves it on, voiding the slot.
    """

    reserved: bool
    wait: float
    factor: float
    epoch: int


@dataclass(frozen=True, slots=True)
class FleetState:
    """A snapshot of one key's shared state, as `RedisLimiter.state` reads it.

    Attributes:
        factor: the rate factor (1: full rate).
        paused_for: seconds left of a fleet pause (0: none).
        queued_for: seconds until the next free slot (0: one is free now).
        epoch: how many pauses and slow-downs the key has seen (while it lived).
    """

    factor: float
    paused_for: float
    queued_for: float
    epoch: int


class RedisLimiter:
    """A `Limiter` shared through Redis by every process naming the same ``key``.

    Pass it as ``RyngClient(limiter=...)`` or ``bulk_append(limiter=...)``. The module's
    docstring tells how it decides (GCRA in a Lua script, Redis's clock), how the fleet
    slows down together and what happens when Redis fails.

    Args:
        redis: a ``redis://`` (or ``rediss://``, ``unix://``) URL, or a
            ``redis.asyncio.Redis`` client (yours: never closed here, and its own retry
            policy applies within each call's ``timeout``).
        key: the name of the shared limit; every process naming it on the same Redis
            shares one ``rate``, and they must all pass the same ``rate``.
        rate: requests per second for the whole fleet (the account's limit).
        margin: seconds added to every one-second window (``rate`` requests are spread
            over ``1 + margin`` seconds), to absorb the jitter between a slot and the
            request's arrival at the server.
        fallback: ``"local"`` to go on at ``rate / expected_workers`` in-process (with a
            warning) when Redis cannot be reached; None (default) to raise instead.
        expected_workers: how many processes share ``key`` (required with
            ``fallback="local"``).
        max_outage: how long `acquire` retries a Redis lost mid-load before it gives up.
        timeout: seconds for one Redis call (connecting included).
        horizon: how far ahead, in seconds, a slot may be reserved.

    Attributes:
        where: the Redis server, for messages (``Redis at host:port (db N)``).
        url: its URL, rebuilt from the client's settings, the password masked (``***``).
        fallback_hint: what the "cannot reach Redis" error tells the caller to do to go on
            without it; a program that builds the limiter from its own settings (the
            command line: ``--redis-fallback local``) sets its own words here.

    Raises:
        ConfigurationError: a bad argument, or a URL redis-py cannot read.
    """

    def __init__(
        self,
        redis: str | Redis,
        key: str,
        rate: float,
        *,
        margin: float = 0.05,
        fallback: Literal["local"] | None = None,
        expected_workers: int | None = None,
        max_outage: float = 10.0,
        timeout: float = 1.0,
        horizon: float = 10.0,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"key must be a non-empty string, got {key!r}")
        self.key = key
        self.limit = _positive(rate, "rate")
        self.margin = _positive(margin, "margin", zero=True)
        self.max_outage = _positive(max_outage, "max_outage", zero=True)
        self.timeout = _positive(timeout, "timeout")
        self.horizon = _positive(horizon, "horizon")
        if fallback not in (None, "local"):
            raise ConfigurationError(f"fallback must be 'local' or None, got {fallback!r}")
        self.fallback = fallback
        if expected_workers is not None and (
            isinstance(expected_workers, bool)
            or not isinstance(expected_workers, int)
            or expected_workers < 1
        ):
            raise ConfigurationError(
                f"expected_workers must be an int >= 1, got {expected_workers!r}"
            )
        if fallback == "local" and expected_workers is None:
            raise ConfigurationError(
                "fallback='local' needs expected_workers= (the local share is "
                "rate / expected_workers)"
            )
        self.expected_workers = expected_workers
        self._redis_key = KEY_PREFIX + key
        if isinstance(redis, str):
            try:
                client = Redis.from_url(
                    redis,
                    socket_connect_timeout=self.timeout,
                    socket_timeout=self.timeout,
                    retry=Retry(NoBackoff(), 0),  # our own retry decides, within max_outage
                )
            except ValueError as exc:
                raise ConfigurationError(f"redis: cannot use this URL: {exc}") from exc
            self._owns_client = True
        elif isinstance(redis, Redis):
            client = redis
            self._owns_client = False
        else:
            raise ConfigurationError(
                f"redis must be a URL or a redis.asyncio.Redis client, got {type(redis).__name__}"
            )
        self._client = client
        self.where = _describe(client)
        self.url = _redacted_url(client)
        self.fallback_hint = (
            "pass fallback='local' with expected_workers= to go on at a local share of the rate"
        )
        self._reserve_script: AsyncScript = client.register_script(_RESERVE)
        self._throttle_script: AsyncScript = client.register_script(_THROTTLE)
        self._recover_script: AsyncScript = client.register_script(_RECOVER)
        self._state_script: AsyncScript = client.register_script(_STATE)
        self._factor = 1.0
        self._reached = False  # Redis answered at least once
        self._outage_since: float | None = None
        self._own_pause_end: float | None = None  # this worker's last 429 plus its pause
        self._local: AdaptiveLimiter | None = None
        self._rng = random.Random()

    def __repr__(self) -> str:
        mode = "local fallback" if self._local is not None else self.where
        return f"<RedisLimiter key={self.key!r} rate={self.limit!r} ({mode})>"

    # -- the Limiter protocol --------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The pace in force: ``rate`` times the fleet's factor, over ``1 + margin``.

        The factor is the one Redis gave with the last slot (it is cached, not fetched).
        After a fallback, the local limiter's rate.
        """
        if self._local is not None:
            return self._local.rate
        return self.limit * self._factor / (1 + self.margin)

    @property
    def local(self) -> bool:
        """Whether the limiter has fallen back to its local share of the rate."""
        return self._local is not None

    async def acquire(self) -> None:
        """Wait for this request's slot in the fleet's schedule.

        Raises:
            RedisAccessError: Redis refused the credentials or the user's rights (a
                `ConfigurationError` too; ``fallback`` does not apply).
            RedisLimiterError: Redis unreachable at the first call, lost for longer than
                ``max_outage`` (unless ``fallback="local"``), or answering with an error.
        """
        # Bounded: a pass repeats only when the queue reached past the horizon (the pass
        # then waited for it to shorten) or a pause or slow-down voided the slot (the
        # next one lies after the pause); max_outage bounds the time Redis may be lost.
        while True:
            local = self._local
            if local is not None:
                await local.acquire()
                return
            try:
                reservation = await self._persist(self._reserve)
                if not reservation.reserved:
                    # Spread the askers so that they do not all come back at once.
                    await anyio.sleep(reservation.wait * (1 + 0.1 * self._rng.random()))
                    continue
                if reservation.wait <= 0:
                    return
                await anyio.sleep(reservation.wait)
                if await self._persist(self._epoch) == reservation.epoch:
                    return
            except _FellBackError:
                continue

    async def throttled(self, retry_after: float | None, *, now: float | None = None) -> None:
        """Record a 429 for the whole fleet: under pressure a fleet pause and a slow-down.

        A Redis that does not answer is not an error here (the next `acquire` deals with
        it): the client's own pause still holds this process.

        Args:
            retry_after: the server's ``Retry-After`` in seconds, if any.
            now: the time to decide at, instead of Redis's clock and this worker's: for
                tests of the rule under a simulated clock.

        Raises:
            RedisLimiterError: Redis answered with an error.
        """
        if self._local is not None:
            await self._local.throttled(retry_after)
            return
        try:
            await self._ask(lambda: self._throttle(retry_after, now))
        except _LostError:
            self._note_outage()

    async def succeeded(self) -> None:
        """Record a success: the fleet's factor climbs back toward 1 (no call when at 1).

        Raises:
            RedisLimiterError: Redis answered with an error.
        """
        if self._local is not None:
            await self._local.succeeded()
            return
        if self._factor >= 1:
            return
        try:
            self._factor = await self._ask(self._recover)
        except _LostError:
            self._note_outage()

    # -- more than the protocol ------------------------------------------------------

    async def reserve(self, *, now: float | None = None) -> Reservation:
        """Ask the shared schedule for the next slot once (no sleep, no retry).

        Args:
            now: the time to decide at, in seconds, instead of Redis's clock: for tests
                of the schedule's arithmetic under a simulated clock.

        Raises:
            RedisLimiterError: Redis unreachable or answering with an error.
        """
        try:
            return await self._ask(lambda: self._reserve(now))
        except _LostError as lost:
            raise self._error(lost.__cause__, first=not self._reached) from lost.__cause__

    async def state(self, *, now: float | None = None) -> FleetState:
        """Read the key's shared state (factor, pause, queue) without changing it.

        Raises:
            RedisLimiterError: Redis unreachable or answering with an error.
        """
        args = ["" if now is None else repr(now)]
        try:
            raw = await self._ask(lambda: self._state_script(keys=[self._redis_key], args=args))
        except _LostError as lost:
            raise self._error(lost.__cause__, first=not self._reached) from lost.__cause__
        queued, factor, paused, epoch = raw
        return FleetState(
            factor=float(factor), paused_for=float(paused), queued_for=float(queued), epoch=epoch
        )

    async def reset(self) -> None:
        """Forget the key's shared state (schedule, pause, slow-down) for every process.

        Raises:
            RedisLimiterError: Redis unreachable or answering with an error.
        """
        try:
            await self._ask(lambda: self._client.delete(self._redis_key))
        except _LostError as lost:
            raise self._error(lost.__cause__, first=not self._reached) from lost.__cause__
        self._factor = 1.0

    async def aclose(self) -> None:
        """Close the connection pool the limiter made from a URL (a client passed in stays)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the scripts -----------------------------------------------------------------

    async def _reserve(self, now: float | None = None) -> Reservation:
        raw = await self._reserve_script(
            keys=[self._redis_key],
            args=[
                repr(self.limit),
                repr(self.margin),
                repr(self.horizon),
                _TTL_MS,
                "" if now is None else repr(now),
            ],
        )
        reserved, wait, factor, epoch = raw
        self._factor = float(factor)
        return Reservation(
            reserved=bool(reserved), wait=float(wait), factor=self._factor, epoch=int(epoch)
        )

    async def _throttle(
        self, retry_after: float | None, now: float | None = None
    ) -> tuple[float, float, int]:
        """Record a 429; return the factor, the pause left and the epoch.

        ``now`` (tests) stands for Redis's clock and this worker's alike.
        """
        if retry_after is not None and not math.isfinite(retry_after):
            retry_after = None
        # This worker's own pause did not help: a 429 within a window after its end (not
        # during it: those answer requests sent before it). Its own clock is fine for that.
        local_now = anyio.current_time() if now is None else now
        own_end = self._own_pause_end
        not_helped = own_end is not None and 0 <= local_now - own_end <= _WINDOW
        if own_end is None or local_now >= own_end:
            self._own_pause_end = local_now + (retry_after or 0.0)
        raw = await self._throttle_script(
            keys=[self._redis_key],
            args=[
                "" if retry_after is None else repr(retry_after),
                repr(self.limit),
                repr(self.margin),
                _TTL_MS,
                "" if now is None else repr(now),
                repr(_WINDOW),
                repr(_DECREASE),
                repr(_FLOOR),
                _PRESSURE_COUNT,
                repr(_PRESSURE_SHARE),
                "1" if not_helped else "0",
            ],
        )
        factor, paused_for, epoch = raw
        self._factor = float(factor)
        return self._factor, float(paused_for), int(epoch)

    async def _recover(self) -> float:
        raw = await self._recover_script(keys=[self._redis_key], args=[repr(_INCREASE), _TTL_MS])
        return float(raw)

    async def _epoch(self) -> int:
        raw = await self._client.hget(self._redis_key, "epoch")
        return int(raw or 0)

    # -- failures --------------------------------------------------------------------

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """Make one Redis call within ``timeout``; `_LostError` if Redis did not answer."""
        try:
            with anyio.fail_after(self.timeout):
                result = await call()
        except redis_errors.RedisError as exc:
            if _refused_access(exc):  # before ConnectionError: AuthenticationError is one
                raise self._access_error(exc) from exc
            if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
                raise _LostError from exc
            raise RedisLimiterError(
                f"{self.where} answered an error for the shared limit {self.key!r} "
                f"(Redis key {self._redis_key!r}): {exc}"
            ) from exc
        except OSError as exc:  # TimeoutError (ours, from fail_after) is an OSError
            raise _LostError from exc
        self._reached = True
        self._outage_since = None
        return result

    def _note_outage(self) -> None:
        if self._outage_since is None and self._reached:
            self._outage_since = anyio.current_time()

    async def _persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """Make a Redis call, retrying a lost Redis for up to ``max_outage`` seconds.

        Raises:
            RedisLimiterError: unreachable at the first call, or lost for too long.
            _FellBackError: the limiter switched to its local share instead.
        """
        delay = _BACKOFF_FIRST
        # Bounded: each pass sleeps, and the passes end max_outage after the outage began.
        while True:
            try:
                return await self._ask(call)
            except _LostError as lost:
                cause = lost.__cause__
                if not self._reached:
                    self._give_up(cause, first=True)
                now = anyio.current_time()
                if self._outage_since is None:
                    self._outage_since = now
                    logger.warning(
                        "lost %s (%s); retrying for up to %.3g s, sending nothing meanwhile",
                        self.where,
                        _reason(cause),
                        self.max_outage,
                    )
                left = self._outage_since + self.max_outage - now
                if left <= 0:
                    self._give_up(cause, first=False)
                await anyio.sleep(min(delay, left))
                delay = min(delay * 2, _BACKOFF_MAX)

    def _give_up(self, cause: BaseException | None, *, first: bool) -> None:
        """Fall back to the local share (raising `_FellBackError`), or raise the error."""
        if self.fallback != "local" or self.expected_workers is None:
            raise self._error(cause, first=first) from cause
        if self._local is None:
            share = self.limit / self.expected_workers
            logger.warning(
                "%s for the shared limit %r (%s); falling back to a local share of the "
                "rate: %.4g requests/s (%.4g / %d workers) for the rest of this limiter's life",
                "cannot reach " + self.where if first else f"lost {self.where} for good",
                self.key,
                _reason(cause),
                share,
                self.limit,
                self.expected_workers,
            )
            self._local = AdaptiveLimiter(share)
        raise _FellBackError

    def _access_error(self, cause: BaseException) -> RedisAccessError:
        reason = _reason(cause)
        password = self._client.connection_pool.connection_kwargs.get("password")
        if isinstance(password, str) and password:
            reason = reason.replace(password, "***")  # Redis does not echo it; be sure
        if not isinstance(cause, redis_errors.AuthenticationError) and not str(cause).startswith(
            _CREDENTIAL_REPLIES
        ):
            what = (
                f"refused the rights the shared rate limit {self.key!r} needs ({reason}): "
                "give the ACL user +evalsha +script|load +hget +hmget +hset +del +pexpire "
                f"+time on the keys ~{KEY_PREFIX}*"
            )
        else:
            what = (
                f"refused the credentials for the shared rate limit {self.key!r} ({reason}): "
                "fix the user and password in the Redis URL"
            )
        return RedisAccessError(
            f"Redis at {self.url} {what}; nothing was sent, and retrying cannot help"
        )

    def _error(self, cause: BaseException | None, *, first: bool) -> RedisLimiterError:
        if first:
            return RedisLimiterError(
                f"cannot reach {self.where} for the shared rate limit {self.key!r} "
                f"({_reason(cause)}); nothing was sent. Start Redis or fix its URL, or "
                f"{self.fallback_hint}"
            )
        return RedisLimiterError(
            f"lost {self.where} for the shared rate limit {self.key!r} for "
            f"{self.max_outage:.3g} s ({_reason(cause)}); stopping rather than sending "
            "unthrottled"
        )


def _positive(value: object, name: str, *, zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _describe(client: Redis) -> str:
    """Name the Redis server for messages: host, port and db, never a password."""
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"Redis at unix:{kwargs['path']} (db {kwargs.get('db', 0)})"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"Redis at {host}:{port} (db {kwargs.get('db', 0)})"


def _redacted_url(client: Redis) -> str:
    """The client's Redis URL, rebuilt from its settings with the password masked."""
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    user = kwargs.get("username") or ""
    secret = ":***" if kwargs.get("password") else ""
    auth = f"{user}{secret}@" if user or secret else ""
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{auth}{kwargs['path']}?db={db}"
    scheme = (
        "rediss" if issubclass(client.connection_pool.connection_class, SSLConnection) else "redis"
    )
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _reason(cause: BaseException | None) -> str:
    if cause is None:
        return "no answer"
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
