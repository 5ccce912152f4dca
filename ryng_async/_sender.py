"""`Sender`: the connection pool and one request with its retries, for every caller.

`RyngClient.append`, `upload_sheet` and the bulk engine all send through `Sender.send`:
one attempt at a time, each status mapped to the error tree, retried under the client's
`RetryPolicy` and its retry budget, paced by a `Limiter`, held by the client's
``Retry-After`` pauses, and told to the observers as load events.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from ._clock import Clock
from ._config import RetryPolicy
from ._events import AttemptEnded, AttemptStarting, ExtensionError, Observers
from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    RyngError,
    ServerError,
)
from ._exchange import Exchange, SendStoppedError, StopSignal
from ._models import AppendResponse, decode_response
from ._ratelimit import Limiter, PauseGate
from ._retry import (
    RetryBudget,
    RetryDetails,
    is_retryable,
    may_have_been_processed,
    parse_retry_after,
    retry_delay,
)

__all__ = ["Sender", "interpret"]

logger = logging.getLogger("ryng_async")

_USER_AGENT = "ryng-async"
_READ_CHUNK = 64 * 1024


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
    ) -> None:
        self.headers: Mapping[str, str] = {"x-access-token": token, "User-Agent": _USER_AGENT}
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
        self._budget = RetryBudget.for_policy(retry)
        self._rng = random.Random(random_seed)
        self._max_connections = max_connections
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
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections
            )
            self._session = aiohttp.ClientSession(connector=connector)
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
        attempts_allowed = min(policy.max_attempts, max_attempts or policy.max_attempts)
        clock = self.clock
        deadline = None if policy.timeout is None else clock.now() + policy.timeout
        while True:
            if stop is not None and stop.fired:
                raise SendStoppedError
            if stop is None:
                await self._take_turn(limiter)
            elif not await stop.run(partial(self._take_turn, limiter)):
                raise SendStoppedError
            exchange.attempts += 1
            if observers:
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
                if isinstance(error, APIError):
                    exchange.status = error.status
                exchange.maybe_processed = doubt_before or may_have_been_processed(error)
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
                if observers:
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
        if observers:
            await observers.emit(
                AttemptEnded(
                    campaign_id=exchange.campaign_id,
                    batch_index=exchange.batch_index,
                    attempt=exchange.attempts,
                    status=error.status if isinstance(error, APIError) else None,
                    error=error,
                    maybe_processed=exchange.maybe_processed,
                    elapsed=self.clock.now() - started,
                ),
                request_error=error,
            )
        if isinstance(error, RateLimitError):
            pause = error.retry_after
            if pause is not None:
                pause = min(pause, self.retry.max_retry_after)
                self.pauses.pause(pause)
            await _feedback(limiter.throttled(pause), request_error=error)
        delay = self._next_delay(error, exchange, attempts_allowed, deadline)
        if delay is not None and observers:
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
        if not self._budget.try_acquire():
            logger.warning("retry budget exhausted; not retrying: %s", error)
            return None
        return delay

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(self, url: URL, data: Any, headers: Mapping[str, str]) -> AppendResponse:
        session = self.session()
        try:
            async with session.post(
                url,
                data=data,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await self._read_capped(response)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectError(f"could not connect to {url.host}: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            raise AmbiguousError(
                f"no answer from {url.host} after sending ({detail}); "
                "the request may have been processed"
            ) from exc
        return interpret(status, raw, retry_after)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise APIError(
                f"response body of {response.content_length} bytes exceeds "
                f"max_response_bytes={limit}",
                status=response.status,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise APIError(
                    f"response body exceeds max_response_bytes={limit}", status=response.status
                )
            chunks.append(chunk)
        return b"".join(chunks)


def interpret(status: int, raw: bytes, retry_after: str | None) -> AppendResponse:
    """Map an HTTP answer to the vendor's response, or raise the matching `APIError`."""
    text = raw.decode("utf-8", "replace")
    try:
        parsed: AppendResponse | None = decode_response(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parsed = None
    message = parsed.message if parsed is not None and parsed.message else None
    if status == 403:
        raise AuthenticationError(message or "Unauthorized Token", status=status, body=text)
    if status == 429:
        raise RateLimitError(
            message or "Too Many Requests",
            status=status,
            body=text,
            retry_after=parse_retry_after(retry_after),
        )
    if status >= 500:
        raise ServerError(message or "server error", status=status, body=text)
    if 200 <= status < 300:
        if parsed is None:
            raise APIError(
                "unexpected response body (not the vendor's JSON answer)",
                status=status,
                body=text,
            )
        if parsed.error:
            raise ServerError(parsed.message or "error: true", status=status, body=text)
        return parsed
    raise APIError(message or "unexpected HTTP status", status=status, body=text)


async def _feedback(call: Any, *, request_error: RyngError | None = None) -> None:
    """Await a limiter call; what it raises becomes an `ExtensionError` (it stops a load)."""
    try:
        await call
    except Exception as exc:
        raise ExtensionError(exc, request_error) from exc
