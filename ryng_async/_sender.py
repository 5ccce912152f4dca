"""`Sender`: the connection pool and one request with its retries, for every caller.

`RyngClient.append`, `upload_sheet` and the bulk engine all send through `Sender.send`:
one attempt at a time, each status mapped to the error tree, retried under the client's
`RetryPolicy` and its retry budget, paced by a `Limiter`, held by the client's
``Retry-After`` pauses, and told to the observers as load events.

Keep-alive is part of correctness for a POST that must not be sent twice: a request written
onto a connection the server has just closed fails without an answer, which would make its
batch ``unknown`` although the server never read it. So the owned pool (`_KeepAliveConnector`)
never reuses a connection idle longer than ``keepalive_timeout`` (4 s by default, below the
5 s of Node, uvicorn and Apache), nor longer than a server's own ``Keep-Alive: timeout=N``
minus a margin of 1 s (undici's ``keepAliveTimeoutThreshold``; a hint of 1 s or less means
no reuse at all). And every JSON body is a `_Body`, which knows whether any of it was handed
to a connection: a request that failed before that provably never reached the server, and
is a `ConnectError` (retried), not an `AmbiguousError`.

Longer than 600 lines because one request's path (the pool's keep-alive rule, the body that
knows whether it was written, the status mapping, the retries) reads best in one place;
`interpret` and the keep-alive connector are the parts to move out first if it grows.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import re
import time
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

import aiohttp
import msgspec
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace
from yarl import URL

from ._clock import Clock
from ._config import KEEPALIVE_MARGIN, PACED_ATTEMPTS_FACTOR, RetryPolicy
from ._events import AttemptEnded, AttemptStarting, ExtensionError, Observers
from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    ResourceLimitError,
    RyngError,
    ServerError,
    UnreadableResponseError,
)
from ._exchange import Exchange, SendStoppedError, StopSignal
from ._models import AppendResponse, decode_response
from ._ratelimit import AdaptiveLimiter, Limiter, PauseGate
from ._retry import (
    RetryBudget,
    RetryDetails,
    is_definite,
    is_retryable,
    may_have_been_processed,
    paces,
    parse_retry_after,
    retry_after_of,
    retry_delay,
)

__all__ = ["Sender", "interpret"]

# -- The aiohttp internals the keep-alive guarantee rests on, named here and only here ---
# Each is checked by tests/test_keepalive.py::test_the_aiohttp_internals_relied_on_are_there
# (it fails if aiohttp changes one); tested from aiohttp 3.12.0 on.
#  1. `TCPConnector.connect(req, traces, timeout) -> Connection`: overridden by
#     _KeepAliveConnector to refuse idle connections that may be closing. Its types,
#     imported above: `client_proto.ResponseHandler`, `client_reqrep.ClientRequest`,
#     `tracing.Trace`.
#  2. `Connection.protocol`, `Connection.close()`: the pooled connection handed back, and
#     closing one not to be reused.
#  3. `ResponseHandler.is_connected()`, `ResponseHandler.close()`: whether the probe is still
#     open; closing a connection whose server's hint is too short to reuse it.
#  4. The pool hands back only connections still connected (`is_connected()` in
#     `BaseConnector._get`): what makes a connection handed back a proof it survived.
#  5. `BytesPayload.write_with_length(writer, content_length)` (added in aiohttp 3.12) and
#     `writer.transport`: _Body writes nothing onto a connection already closing.
AIOHTTP_INTERNALS = (
    "TCPConnector.connect(req, traces, timeout)",
    "Connection.protocol",
    "Connection.close",
    "ResponseHandler.is_connected",
    "ResponseHandler.close",
    "BaseConnector._get checks is_connected",
    "BytesPayload.write_with_length(writer, content_length)",
    "StreamWriter.transport",
)

logger = logging.getLogger("ryng_async")

_USER_AGENT = "ryng-async"
_READ_CHUNK = 64 * 1024
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
_LARGE_BODY = 1 << 20  # aiohttp warns of raw bodies past this size
UNPROVEN_IDLE = 0.5
"""Seconds of idleness after which a connection is reused only on proof it stays open."""
_REUSE, _PROBE, _CLOSE = "reuse", "probe", "close"
_idle_clock = time.monotonic  # how long pooled connections idle (tests move it by hand)
# The connection the current task's request went out on: a small answer is read whole with
# its headers and its connection released before the caller sees the response.
_CONNECTION: ContextVar[ResponseHandler | None] = ContextVar("ryng_connection", default=None)


class _KeepAliveConnector(aiohttp.TCPConnector):
    """The owned pool: aiohttp's, plus a connection reused only while surely still open.

    aiohttp itself drops connections idle longer than ``keepalive_timeout``. This adds,
    through the connector's ``connect``, two limits on reusing an idle connection:

    - a server's ``Keep-Alive: timeout=N``: not reused once idle past ``N`` less
      `KEEPALIVE_MARGIN`;
    - without that hint (nginx and gunicorn send none), proof: a connection idle up to
      `UNPROVEN_IDLE` is reused (no server we know closes faster than 1 s); past it, only if
      the pool has already seen one of this server's connections still open at an idle age
      that much longer (the longest seen, less a margin: `KEEPALIVE_MARGIN` or half of it).
      Each connection handed back by aiohttp is such an observation, so a server that
      closes idle connections after 2 s is never sent a request at 2 s: a new connection
      is opened instead, and the one refused is kept open, out of the pool and never
      sent on, as a probe (up to ``keepalive_timeout``): if it survives, the proof grows. The cost,
      against a server that keeps connections longer: a new connection for the first
      requests after idle spells longer than anything proven yet (nothing for a busy
      load, whose connections idle for milliseconds).
    """

    def __init__(self, *, limit: int, keepalive_timeout: float) -> None:
        if keepalive_timeout > 0:
            super().__init__(limit=limit, limit_per_host=limit, keepalive_timeout=keepalive_timeout)
        else:
            super().__init__(limit=limit, limit_per_host=limit, force_close=True)
        self._idle_limits: WeakKeyDictionary[ResponseHandler, float] = WeakKeyDictionary()
        self._released: WeakKeyDictionary[ResponseHandler, float] = WeakKeyDictionary()
        self._longest_idle = keepalive_timeout
        self.proven_idle = 0.0  # the longest idle time a connection was seen to survive
        self.refused_idle = 0  # idle connections not reused (unproven)
        self._probe: tuple[aiohttp.connector.Connection, ResponseHandler, float] | None = None

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, overridden
    ) -> aiohttp.connector.Connection:
        """Return a connection from the pool that is surely still open, or a new one."""
        self._watch_probe()
        connection = await super().connect(req, traces, timeout)
        # Bounded: each pass takes one idle connection out of the pool (at most `limit`
        # of them); a new connection ends the loop.
        for _ in range(self.limit):
            protocol = connection.protocol
            if protocol is None:
                break
            released = self._released.pop(protocol, None)
            verdict = _REUSE if released is None else self._verdict(protocol, released)
            if verdict is _REUSE:
                break
            if verdict is _PROBE and self._probe is None and self.limit > 1:
                # Kept open, never sent on, only to see how long the server keeps it. One
                # at most: it holds one place of the pool, and the others can go on.
                self._probe = (connection, protocol, released or 0.0)
            else:
                connection.close()
            connection = await super().connect(req, traces, timeout)
        _CONNECTION.set(connection.protocol)
        return connection

    def _verdict(self, protocol: ResponseHandler, released: float) -> str:
        """Reuse an idle connection, keep it idle as a probe, or close it."""
        idle = _idle_clock() - released
        hint = self._idle_limits.get(protocol)
        if idle > self._longest_idle or (hint is not None and idle > hint):
            return _CLOSE
        # aiohttp hands back only a connection still open: it survived ``idle``.
        proven = self.proven_idle
        self._survived(idle)
        if (
            hint is not None
            or idle <= UNPROVEN_IDLE
            or idle <= proven - min(KEEPALIVE_MARGIN, proven / 2)
        ):
            return _REUSE
        self.refused_idle += 1
        return _PROBE

    def _survived(self, idle: float) -> None:
        self.proven_idle = max(self.proven_idle, min(idle, self._longest_idle))

    def _watch_probe(self) -> None:
        """Note how long the probe has stayed open; close it once it proved all it can."""
        if self._probe is None:
            return
        _, protocol, released = self._probe
        idle = _idle_clock() - released
        if protocol.is_connected():
            self._survived(idle)
            if idle < self._longest_idle:
                return
        self.close_probe()

    def close_probe(self) -> None:
        """Close the probe connection, if any (before the pool closes)."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe[0].close()  # not back to the pool: never reused

    def honour_keep_alive(self, response: aiohttp.ClientResponse) -> None:
        """Note the ``Keep-Alive: timeout=N`` of the current task's answer, for its connection."""
        hint = keep_alive_timeout(response.headers.get("Keep-Alive"))
        protocol = _CONNECTION.get()
        if hint is not None and protocol is not None:
            self._idle_limits[protocol] = max(hint - KEEPALIVE_MARGIN, 0.0)

    def released(self) -> None:
        """Note that the current task's connection went back to the pool, idle from now."""
        protocol = _CONNECTION.get()
        if protocol is None:
            return
        limit = self._idle_limits.get(protocol)
        if limit is not None and limit <= 0:
            protocol.close()  # a hint too short to reuse the connection safely
        else:
            self._released[protocol] = _idle_clock()


def keep_alive_timeout(header: str | None) -> float | None:
    """Return the ``timeout`` of a ``Keep-Alive`` header in seconds, or None.

    ``Keep-Alive: timeout=5, max=1000`` gives 5.0; an absent, malformed, negative or
    non-finite value gives None (no hint: the client's own keep-alive applies).
    """
    if not header:
        return None
    for part in header.split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() != "timeout":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None
        return seconds if 0 <= seconds < float("inf") else None
    return None


class _Body(aiohttp.BytesPayload):
    """A request body that knows whether any of it was handed to a connection.

    aiohttp writes a request's headers together with its body's first bytes. If the
    connection is already closing when the body is about to be written, nothing is written
    and the request provably never reached the server. Once `seal` has been called, no
    later write goes out either, so its answer stays true.
    """

    def __init__(self, value: bytes | bytearray | memoryview, content_type: str) -> None:
        if len(value) <= _LARGE_BODY:
            super().__init__(value, content_type=content_type)
        else:
            with warnings.catch_warnings():
                # aiohttp advises streaming bodies over 1 MB; a batch (up to max_batch_bytes)
                # is encoded whole once and kept to be resent: there is nothing to stream.
                warnings.simplefilter("ignore", ResourceWarning)
                super().__init__(value, content_type=content_type)
        self.handed_over = False
        self._sealed = False

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write the whole body (see `write_with_length`)."""
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Write the body, unless the connection is closing (then nothing at all)."""
        transport = writer.transport
        # No transport: the connection was lost already (Python 3.12+ clears it sooner).
        if self._sealed or transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed before the request was written")
        self.handed_over = True
        await super().write_with_length(writer, content_length)

    def seal(self) -> bool:
        """Refuse any later write; return True if none of the body was ever handed over."""
        self._sealed = True
        return not self.handed_over


class Sender:
    """Sends requests for one client: its pool, retries, budget, pauses and default limiter.

    Args:
        token: the access token (sent as ``x-access-token``; never shown).
        timeout: the aiohttp timeout of one attempt.
        retry: the retry policy.
        limiter: the client's limiter (a load may bring its own).
        clock: the clock of retry waits and pauses.
        observers: the client's observers (on_retry, logging, the user's).
        session: a caller's session (never closed here), or None for an owned pool.
        max_connections: size of an owned pool.
        keepalive_timeout: the longest an owned pool's connection idles before it is
            closed instead of reused (0: never reused).
        max_response_bytes: the longest response body read.
        random_seed: seeds the backoff jitter.
    """

    def __init__(
        self,
        *,
        token: str,
        timeout: aiohttp.ClientTimeout,
        retry: RetryPolicy,
        limiter: Limiter,
        clock: Clock,
        observers: Observers,
        session: aiohttp.ClientSession | None,
        max_connections: int,
        max_response_bytes: int,
        random_seed: int | None,
        keepalive_timeout: float,
    ) -> None:
        self.headers: Mapping[str, str] = {"x-access-token": token, "User-Agent": _USER_AGENT}
        self._token = token.encode()
        self.json_headers: Mapping[str, str] = {
            **self.headers,
            "Content-Type": "application/json",
        }
        self.retry = retry
        self.limiter = limiter
        self.clock = clock
        self.observers = observers
        self.pauses = PauseGate(clock)
        self._timeout = timeout
        self.attempt_timeout: float | None = timeout.total
        self._budget = RetryBudget.for_policy(retry)
        self._rng = random.Random(random_seed)
        self._max_connections = max_connections
        self._keepalive_timeout = keepalive_timeout
        self._connector: _KeepAliveConnector | None = None
        self._max_response_bytes = max_response_bytes
        self._session = session
        self._owns_session = session is None
        self._loads: dict[asyncio.Task[None], Callable[[], None]] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<Sender {'closed' if self.closed else 'open'}>"

    # -- the pool --------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """Return the session to send on, opening the owned pool on first use.

        Raises:
            ConfigurationError: the client is closed, or a caller's session is.
        """
        if self.closed:
            raise ConfigurationError("this RyngClient is closed; create a new one")
        if self._session is not None and self._session.closed:
            raise ConfigurationError(
                "the aiohttp session passed as session= is closed"
                if not self._owns_session
                else "the client's connection pool is closed"
            )
        if self._session is None:
            self._connector = _KeepAliveConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_timeout
            )
            self._session = aiohttp.ClientSession(connector=self._connector)
        return self._session

    def adopt(self, task: asyncio.Task[None], stop: Callable[[], None]) -> None:
        """Keep a load running in its own task (a result stream) to stop at `aclose`."""
        self._loads[task] = stop
        task.add_done_callback(self._loads.pop)

    async def aclose(self) -> None:
        """Stop the loads still running, then close the owned pool; refuse new requests.

        A caller's session stays open.
        """
        if self._loads:
            for stop in list(self._loads.values()):
                stop()
            # They send nothing new now; their requests in flight end (each bounded by
            # the attempt timeout) before the pool they run on is closed.
            await asyncio.wait(list(self._loads))
        self.closed = True
        if self._connector is not None:
            self._connector.close_probe()
        self._connector = None
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # -- one request, with retries ---------------------------------------------------

    async def send(
        self,
        exchange: Exchange,
        url: URL,
        make_data: Callable[[], Any],
        *,
        json: bool = True,
        limiter: Limiter | None = None,
        observers: Observers | None = None,
        max_attempts: int | None = None,
        stop: StopSignal | None = None,
    ) -> AppendResponse:
        """Send one request, retrying under the policy; return the answer or raise.

        ``exchange`` is kept up to date so a caller can tell, after a cancel, whether the
        request may have been processed (or was accepted). ``make_data`` makes the body
        for each attempt. With ``stop`` fired, no new attempt starts and
        `SendStoppedError` is raised instead.

        Raises:
            RyngError: the last attempt's error, once no retry is allowed.
            ExtensionError: an observer or the limiter raised (``.request_error`` holds
                the attempt's own error, ``.response`` an accepted answer).
            SendStoppedError: ``stop`` fired before a new attempt.
        """
        policy = self.retry
        limiter = limiter or self.limiter
        observers = self.observers if observers is None else observers
        headers = self.json_headers if json else self.headers
        attempts_allowed, paced_cap = _attempt_limits(policy, max_attempts)
        clock = self.clock
        deadline = None if policy.timeout is None else clock.now() + policy.timeout
        while True:
            if stop is not None and stop.fired:
                raise SendStoppedError
            await self._wait_turn(limiter, stop)
            exchange.attempts += 1
            if observers.hears(AttemptStarting):
                await observers.emit(
                    AttemptStarting(
                        campaign_id=exchange.campaign_id,
                        batch_index=exchange.batch_index,
                        attempt=exchange.attempts,
                    )
                )
            doubt_before = exchange.maybe_processed
            if doubt_before:
                exchange.maybe_duplicated = True  # resent after an ambiguous attempt
            exchange.maybe_processed = True
            started = clock.now()
            try:
                response = await self._attempt(url, make_data(), headers)
            except RyngError as error:
                status = _status(error)
                if status is not None:
                    exchange.status = status
                exchange.maybe_processed = doubt_before or may_have_been_processed(error)
                attempts_allowed = _after_pacing(error, attempts_allowed, paced_cap)
                delay = await self._after_failure(
                    error,
                    exchange=exchange,
                    limiter=limiter,
                    observers=observers,
                    started=started,
                    attempts_allowed=attempts_allowed,
                    deadline=deadline,
                )
                if delay is None:
                    raise
                if stop is None:
                    await clock.sleep(delay)
                elif not await stop.run(partial(clock.sleep, delay)):
                    raise SendStoppedError from error
                continue
            exchange.status = 200
            exchange.response = response  # accepted, whatever happens from here on
            self._budget.record_success()
            try:
                if observers.hears(AttemptEnded):
                    await observers.emit(
                        AttemptEnded(
                            campaign_id=exchange.campaign_id,
                            batch_index=exchange.batch_index,
                            attempt=exchange.attempts,
                            status=200,
                            error=None,
                            maybe_processed=True,
                            elapsed=clock.now() - started,
                        )
                    )
                await _feedback(limiter.succeeded())
            except ExtensionError as failure:
                failure.response = response
                raise
            return response

    async def _wait_turn(self, limiter: Limiter, stop: StopSignal | None) -> None:
        """Wait for the client's pauses and the limiter's go, stopped by ``stop``.

        Raises:
            SendStoppedError: ``stop`` fired while waiting.
        """
        if self._may_go_now(limiter):
            return  # nothing to wait for: no cancel scope, no coroutines a request
        if stop is None:
            await self._take_turn(limiter)
        elif not await stop.run(partial(self._take_turn, limiter)):
            raise SendStoppedError

    def _may_go_now(self, limiter: Limiter) -> bool:
        """Say whether `_take_turn` would return at once, without waiting for anything.

        True with no pause on and the default limiter pacing nothing (no rate set or
        learned): its ``acquire`` then returns without awaiting.
        """
        return type(limiter) is AdaptiveLimiter and limiter.rate is None and self.pauses.is_open()

    async def _take_turn(self, limiter: Limiter) -> None:
        """Wait for the client's pauses and the limiter's go."""
        await _feedback(self.pauses.admit(limiter))

    async def _after_failure(
        self,
        error: RyngError,
        *,
        exchange: Exchange,
        limiter: Limiter,
        observers: Observers,
        started: float,
        attempts_allowed: int,
        deadline: float | None,
    ) -> float | None:
        """Tell observers and the limiter of a failed attempt; return the retry's delay."""
        if observers.hears(AttemptEnded):
            await observers.emit(
                AttemptEnded(
                    campaign_id=exchange.campaign_id,
                    batch_index=exchange.batch_index,
                    attempt=exchange.attempts,
                    status=_status(error),
                    error=error,
                    maybe_processed=exchange.maybe_processed,
                    elapsed=self.clock.now() - started,
                ),
                request_error=error,
            )
        if paces(error):  # a 429 or a 503
            pause = retry_after_of(error)
            if pause is not None:
                pause = min(pause, self.retry.max_retry_after)
                self.pauses.pause(pause)
            await _feedback(limiter.throttled(pause), request_error=error)
        delay = self._next_delay(error, exchange, attempts_allowed, deadline)
        if delay is not None and observers.hears(RetryDetails):
            await observers.emit(
                RetryDetails(
                    campaign_id=exchange.campaign_id,
                    batch_index=exchange.batch_index,
                    attempt=exchange.attempts,
                    delay=delay,
                    reason=str(error),
                    error=error,
                ),
                request_error=error,
            )
        return delay

    def _next_delay(
        self, error: RyngError, exchange: Exchange, attempts_allowed: int, deadline: float | None
    ) -> float | None:
        """Return the wait before the next attempt, or None if there is none."""
        policy = self.retry
        if exchange.attempts >= attempts_allowed or not is_retryable(error, policy):
            return None
        delay = retry_delay(error, exchange.attempts, policy, self._rng)
        if deadline is not None and self.clock.now() + delay > deadline:
            return None
        # A 429 or 503 asks the client to slow down (the limiter does): it is flow control,
        # not a broken server, so it does not spend the budget that guards against one.
        if not paces(error) and not self._budget.try_acquire():
            logger.warning("retry budget exhausted; not retrying: %s", error)
            return None
        return delay

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(self, url: URL, data: Any, headers: Mapping[str, str]) -> AppendResponse:
        session = self.session()
        connector = self._connector
        raw_body = isinstance(data, bytes | bytearray | memoryview)
        body = _Body(data, headers["Content-Type"]) if raw_body else None
        try:
            async with session.post(
                url,
                data=data if body is None else body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if connector is not None:
                    connector.honour_keep_alive(response)
                status = response.status
                retry_after = response.headers.get("Retry-After")
                location = response.headers.get("Location")
                raw = await self._read_capped(response)
            if connector is not None:
                connector.released()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            _raise_if_out_of_resources(exc)
            raise ConnectError(f"could not connect to {url.host}: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if body is not None and body.seal():
                # Not one byte of the request went out: the server cannot have read it.
                _raise_if_out_of_resources(exc)
                raise ConnectError(
                    f"the connection to {url.host} closed before the request was sent "
                    f"({_describe(exc)})"
                ) from exc
            raise AmbiguousError(
                f"no answer from {url.host} after sending ({_describe(exc)}); "
                "the request may have been processed"
            ) from exc
        token = self._token
        if token and token in raw:  # a proxy's page echoing the request: never show it
            raw = raw.replace(token, b"<token>")
        if location is not None and token and token.decode() in location:
            location = location.replace(token.decode(), "<token>")
        return interpret(
            status,
            raw,
            retry_after,
            location=location,
            sent=len(data) if raw_body else None,
            policy=self.retry,
        )

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        status = response.status
        if response.content_length is not None and response.content_length > limit:
            _raise_too_long(f"{response.content_length} bytes exceeds", limit, status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                _raise_too_long("exceeds", limit, status)
            chunks.append(chunk)
        return b"".join(chunks)


def _raise_too_long(what: str, limit: int, status: int) -> None:
    message = f"response body {what} max_response_bytes={limit}"
    if 200 <= status < 300:
        raise UnreadableResponseError(message, status=status)
    raise APIError(message, status=status)


def _attempt_limits(policy: RetryPolicy, max_attempts: int | None) -> tuple[int, int]:
    """Attempts a request may make, and the most it may make when answers pace it."""
    allowed = min(policy.max_attempts, max_attempts or policy.max_attempts)
    return allowed, allowed * PACED_ATTEMPTS_FACTOR if allowed > 1 else 1


def _after_pacing(error: RyngError, allowed: int, cap: int) -> int:
    """One attempt more after a 429 or 503, up to ``cap``.

    Flow control, not a failure: the limiter slows down, and behind a proxy's rate limit
    a batch may meet several of them before its turn comes.
    """
    return allowed + 1 if paces(error) and allowed < cap else allowed


def _status(error: RyngError) -> int | None:
    """The HTTP status an error came with, if it came with one."""
    if isinstance(error, APIError | AmbiguousError):
        return error.status
    return None


def _describe(exc: BaseException) -> str:
    return type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or repr(exc)


def _raise_if_out_of_resources(exc: BaseException) -> None:
    """Raise `ResourceLimitError` if ``exc`` comes from a local resource running out.

    Running out of file descriptors or memory is the client's problem, not the server's:
    retrying would only fail again and charge every batch a ``ConnectError``.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    # Bounded: each pass follows one link of the chain, and a link seen twice ends it.
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        code = cause.errno if isinstance(cause, OSError) else None
        if code in _OUT_OF_RESOURCES:
            raise ResourceLimitError(_resource_message(code), errno=code, limit=_fd_limit(code))
        os_error = cause.os_error if isinstance(cause, aiohttp.ClientConnectorError) else None
        cause = (
            os_error
            if os_error is not None and id(os_error) not in seen
            else (cause.__cause__ or cause.__context__)
        )


def _fd_limit(code: int) -> int | None:
    if code != errno.EMFILE:
        return None
    try:
        import resource  # POSIX only, and needed on this rare path only
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _resource_message(code: int) -> str:
    if code == errno.EMFILE:
        limit = _fd_limit(code)
        shown = "unknown" if limit is None else str(limit)
        return (
            f"the process ran out of file descriptors (ulimit -n is {shown}) while "
            "opening a connection: lower max_connections or the load's concurrency, or "
            "raise the limit (ulimit -n)"
        )
    if code == errno.ENFILE:
        return (
            "the system ran out of file descriptors (its system-wide limit) while opening "
            "a connection: lower max_connections or the load's concurrency, or raise the "
            "system's limit (fs.file-max)"
        )
    return (
        "the system ran out of memory (ENOMEM) while opening a connection: lower "
        "max_connections or the load's concurrency, or free memory"
    )


_DEFAULT_POLICY = RetryPolicy()
_EXCERPT = 80
_TAGS = re.compile(r"<[^>]*>")


def excerpt(text: str, limit: int = _EXCERPT) -> str:
    """Return a short one-line excerpt of a body that is not Ryng's JSON (tags dropped)."""
    plain = " ".join(_TAGS.sub(" ", text).split())
    if not plain:
        return "(empty body)"
    return plain if len(plain) <= limit else plain[: limit - 3] + "..."


def interpret(
    status: int,
    raw: bytes,
    retry_after: str | None,
    *,
    location: str | None = None,
    sent: int | None = None,
    policy: RetryPolicy = _DEFAULT_POLICY,
) -> AppendResponse:
    """Map an HTTP answer to the vendor's response, or raise the matching error.

    What is definite and what is ambiguous is `is_definite`'s table: a 5xx that does not
    prove the request was not processed (a proxy's 502 or 504) is an `AmbiguousError`
    keeping its ``.status`` and ``.body``. ``location`` is a redirect's ``Location`` (never
    followed), ``sent`` the size of the request body (named by a 413's message).
    """
    text = raw.decode("utf-8", "replace")
    try:
        parsed: AppendResponse | None = decode_response(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parsed = None
    if 200 <= status < 300:
        if parsed is None:
            raise UnreadableResponseError(
                "empty response body" if not raw else "response body is not the vendor's JSON",
                status=status,
                body=text,
            )
        if parsed.error:
            raise ServerError(parsed.message or "error: true", status=status, body=text)
        return parsed
    ryng_error = parsed is not None and parsed.error
    if not is_definite(status, ryng_error=ryng_error, policy=policy):
        raise AmbiguousError(
            f"HTTP {status} from a proxy or gateway (not Ryng's JSON): {excerpt(text)}; "
            "the request may have been processed",
            status=status,
            body=text,
        )
    if parsed is not None and ryng_error:
        message = parsed.message or _REASONS.get(status, "error: true")
    else:
        message = (
            f"{_REASONS.get(status, 'unexpected HTTP status')} (not Ryng's JSON): {excerpt(text)}"
        )
    if 300 <= status < 400:
        message = (
            f"redirect to {location or '(no Location header)'} not followed: the token is "
            "sent only to the configured address; set base_url to where Ryng's API answers"
        )
    if status == 403:
        raise AuthenticationError(
            parsed.message if parsed is not None and parsed.message else "Unauthorized Token",
            status=status,
            body=text,
        )
    if status == 429:
        raise RateLimitError(
            message, status=status, body=text, retry_after=parse_retry_after(retry_after)
        )
    if status == 413:
        size = "the request body" if sent is None else f"a request body of {sent:,} bytes"
        message = (
            f"{size} is larger than the server accepts ({message}); send fewer or smaller "
            "leads a request (max_batch_bytes)"
        )
    if status >= 500:
        raise ServerError(
            message,
            status=status,
            body=text,
            retry_after=parse_retry_after(retry_after) if status == 503 else None,
        )
    raise APIError(message, status=status, body=text)


_REASONS = {
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "server error",
    503: "Service Unavailable",
}


async def _feedback(call: Any, *, request_error: RyngError | None = None) -> None:
    """Await a limiter call; what it raises becomes an `ExtensionError` (it stops a load)."""
    try:
        await call
    except Exception as exc:
        raise ExtensionError(exc, request_error) from exc
