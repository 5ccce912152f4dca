"""Blocking work off the event loop, in a daemon thread that a cancel leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TypeVar

from .._intake import LeadChunks

__all__ = ["lead_chunks", "run_blocking"]

T = TypeVar("T")


async def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` in a daemon thread of its own and await its result.

    A cancel returns at once and leaves the thread to finish alone (its result dropped):
    a read blocked on a pipe neither delays Ctrl-C nor keeps the process alive at exit,
    as a pooled worker thread would. A thread costs some 0.1 ms, once per chunk.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the awaiting task
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="ryng-async-reader", daemon=True).start()
    return await future


class _Chunked(Protocol):
    """A file's leads, parsed a chunk at a time (a `LeadSource`)."""

    rows: int

    def chunks(self) -> Iterator[list[Any]]: ...


def lead_chunks(source: _Chunked, limit: int | None = None) -> LeadChunks:
    """The source's leads, a chunk at a time, each parsed in a daemon thread.

    A load takes each list whole. With a ``limit``, only the first ``limit`` leads, and the
    source then counts only those rows.
    """
    return LeadChunks(_chunks(source, limit))


async def _chunks(source: _Chunked, limit: int | None) -> AsyncIterator[list[Any]]:
    chunks = source.chunks()
    left = limit
    while left is None or left > 0:
        chunk = await run_blocking(next, chunks, None)
        if chunk is None:
            return
        if left is not None:
            chunk = chunk[:left]
            left -= len(chunk)
        yield chunk
    if limit is not None:
        source.rows = min(source.rows, limit)
