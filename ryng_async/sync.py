"""Synchronous entry points for schedulers and scripts: Airflow tasks, cron jobs, plain code.

Each call builds a `RyngClient`, runs one async call to its end in an event loop of its
own (``asyncio.run``), closes the client and returns what the async call returns, or
raises what it raises: the same `BulkReport`, the same errors (an `AuthenticationError`
with its ``.report``, an input's own exception...)::

    from ryng_async import sync

    report = sync.bulk_append("42", rows, batch_size=500, concurrency=8)
    report.raise_for_failures()  # the task fails if any lead was not accepted

Called from code already running in an event loop (an ``async def``, a notebook cell),
they refuse with `EventLoopRunningError` rather than block that loop: await the async
client there instead.

Ctrl-C (SIGINT) during `bulk_append` stops the load gently: nothing new is read or sent,
the requests in flight end with their real outcomes (within ``stop_grace``, the
``timeout`` by default), the rest is ``skipped``, and then ``KeyboardInterrupt`` is
raised. A second Ctrl-C cancels the requests still in flight at once (they end
``unknown``). Pass ``report=BulkReport()`` to read the report after the
``KeyboardInterrupt``. This holds in the main thread when SIGINT has Python's default
handler; a handler of your own (or SIGINT ignored) is left alone.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, Unpack

from . import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    AppendResponse,
    BulkOptions,
    BulkReport,
    CampaignOptions,
    Clock,
    ConfigurationError,
    LeadInput,
    Limiter,
    LoadObserver,
    RetryHook,
    RetryPolicy,
    RyngClient,
)

__all__ = ["EventLoopRunningError", "append", "bulk_append"]

_T = TypeVar("_T")


class EventLoopRunningError(ConfigurationError):
    """A synchronous call was made from code running in an event loop.

    It would block that loop (and every task on it) for the whole load. In async code,
    ``await`` the same call on a `RyngClient` instead.
    """


def _refuse_in_a_running_loop(call: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop running in this thread: the one case we can serve
    raise EventLoopRunningError(
        f"ryng_async.sync.{call} was called inside a running event loop (async code, or a "
        "notebook cell): it would block that loop for the whole call. There, use the async "
        f"client: `async with RyngClient(...) as client: await client.{call}(...)`"
    )


def _run(client: RyngClient, call: Callable[[RyngClient], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        async with client:
            return await call(client)

    return asyncio.run(main())


class _GentleInterrupts:
    """SIGINT during a load: the first sets its stop event, the second cancels it.

    Installed only in the main thread over Python's default handler (asyncio's own runner
    would cancel the load on the first Ctrl-C, turning the requests in flight unknown).
    A third SIGINT raises `KeyboardInterrupt` where the code stands, as Python does.
    """

    def __init__(self) -> None:
        self.count = 0
        self.stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    def attach(self) -> asyncio.Event:
        """Bind to the running load's loop and task; return its stop event."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.stop = asyncio.Event()
        if self.count:  # interrupted before the load started
            self.stop.set()
        return self.stop

    def handle(self, signum: int, frame: object) -> None:
        self.count += 1
        loop, stop, task = self._loop, self.stop, self._task
        if self.count > 2 or loop is None or stop is None or task is None or loop.is_closed():
            raise KeyboardInterrupt
        # Runs between two bytecodes of the loop's thread: hand the work to the loop.
        loop.call_soon_threadsafe(stop.set if self.count == 1 else task.cancel)


def _run_load(
    client: RyngClient, call: Callable[[RyngClient, asyncio.Event | None], Awaitable[BulkReport]]
) -> BulkReport:
    interrupts = _GentleInterrupts()

    async def main() -> BulkReport:
        stop = interrupts.attach()
        async with client:
            return await call(client, stop)

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return _run(client, lambda ryng: call(ryng, None))
    previous = signal.signal(signal.SIGINT, interrupts.handle)
    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        if interrupts.count:
            raise KeyboardInterrupt from None  # the second Ctrl-C cancelled the load
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupts.count:
        interrupted = KeyboardInterrupt()
        interrupted.add_note(f"ryng_async: the load stopped gently: {report}")
        raise interrupted
    return report


def bulk_append(
    campaign_id: str | int,
    leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
    *,
    subdomain: str | None = None,
    access_token: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    retry: RetryPolicy | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    on_retry: RetryHook | None = None,
    random_seed: int | None = None,
    clock: Clock | None = None,
    **options: Unpack[BulkOptions],
) -> BulkReport:
    """Bulk-load leads from synchronous code; return the `BulkReport`.

    The same as ``await RyngClient(...).bulk_append(campaign_id, leads, **options)`` run
    in an event loop of its own, with a client made for this load and closed after it.

    Args:
        campaign_id: the campaign to load into.
        leads: any iterable (or async iterable) of `Lead` s or wire-form mappings, e.g.
            ``ryng_async.dataframes.leads_from_frame(frame).leads``.
        subdomain: the account's subdomain; defaults to ``RYNG_SUBDOMAIN``.
        access_token: the ``x-access-token``; defaults to ``RYNG_ACCESS_TOKEN``.
        base_url: replaces ``https://{subdomain}.ryng.in``; defaults to ``RYNG_BASE_URL``.
        timeout: seconds allowed for one attempt.
        connect_timeout: seconds allowed to open a connection, or None.
        retry: when to try again; `RetryPolicy` defaults if None.
        max_response_bytes: the longest response body read.
        on_retry: called with a `RetryDetails` before every retry.
        max_connections: size of the connection pool.
        random_seed: seeds the backoff jitter, for reproducible runs.
        clock: the clock of retry waits, pauses and report timings.
        **options: the options of `RyngClient.bulk_append` (`BulkOptions`):
            ``batch_size``, ``concurrency``, ``rate_limit``, ``limiter``, ``observers``,
            ``checkpoint``, ``report``, the campaign options...

    Returns:
        The load's final `BulkReport` (call ``raise_for_failures()`` to fail a task on
        any lead not accepted).

    Raises:
        EventLoopRunningError: called from code running in an event loop.
        ConfigurationError: a missing or malformed setting, before any I/O.
        AuthenticationError: the token was refused (``.report`` is the partial report).
        KeyboardInterrupt: Ctrl-C, once the load has stopped (gently, unless twice).
        RyngError: whatever else `RyngClient.bulk_append` raises, the same way.
    """
    _refuse_in_a_running_loop("bulk_append")
    client = RyngClient(
        subdomain,
        access_token,
        base_url=base_url,
        timeout=timeout,
        connect_timeout=connect_timeout,
        retry=retry,
        max_connections=max_connections,
        max_response_bytes=max_response_bytes,
        on_retry=on_retry,
        random_seed=random_seed,
        clock=clock,
    )
    if options.get("stop") is not None:  # the caller's own stop event
        return _run(client, lambda ryng: ryng.bulk_append(campaign_id, leads, **options))

    def load(ryng: RyngClient, stop: asyncio.Event | None) -> Awaitable[BulkReport]:
        stopping: BulkOptions = {**options, "stop": stop}
        return ryng.bulk_append(campaign_id, leads, **stopping)

    return _run_load(client, load)


def append(
    campaign_id: str | int,
    leads: Iterable[LeadInput],
    *,
    subdomain: str | None = None,
    access_token: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    rate_limit: float | None = None,
    limiter: Limiter | None = None,
    retry: RetryPolicy | None = None,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    on_retry: RetryHook | None = None,
    observers: Sequence[LoadObserver] = (),
    random_seed: int | None = None,
    clock: Clock | None = None,
    **options: Unpack[CampaignOptions],
) -> AppendResponse:
    """Append leads in one request from synchronous code; return the `AppendResponse`.

    The same as ``await RyngClient(...).append(campaign_id, leads, **options)`` run in an
    event loop of its own. For many leads, `bulk_append` batches them.

    Args:
        campaign_id: the campaign to append to.
        leads: `Lead` s or wire-form mappings.
        subdomain: the account's subdomain; defaults to ``RYNG_SUBDOMAIN``.
        access_token: the ``x-access-token``; defaults to ``RYNG_ACCESS_TOKEN``.
        base_url: replaces ``https://{subdomain}.ryng.in``; defaults to ``RYNG_BASE_URL``.
        timeout: seconds allowed for one attempt.
        connect_timeout: seconds allowed to open a connection, or None.
        rate_limit: the most requests per second, or None.
        limiter: any `Limiter` to pace the request instead (not with ``rate_limit``).
        retry: when to try again; `RetryPolicy` defaults if None.
        max_response_bytes: the longest response body read.
        on_retry: called with a `RetryDetails` before every retry.
        observers: callables given the request's load events.
        random_seed: seeds the backoff jitter, for reproducible runs.
        clock: the clock of retry waits and pauses.
        **options: the campaign options of `RyngClient.append` (`CampaignOptions`).

    Raises:
        EventLoopRunningError: called from code running in an event loop.
        RyngError: whatever `RyngClient.append` raises, the same way.
    """
    _refuse_in_a_running_loop("append")
    client = RyngClient(
        subdomain,
        access_token,
        base_url=base_url,
        timeout=timeout,
        connect_timeout=connect_timeout,
        rate_limit=rate_limit,
        limiter=limiter,
        retry=retry,
        max_response_bytes=max_response_bytes,
        on_retry=on_retry,
        observers=observers,
        random_seed=random_seed,
        clock=clock,
    )
    return _run(client, lambda ryng: ryng.append(campaign_id, leads, **options))
