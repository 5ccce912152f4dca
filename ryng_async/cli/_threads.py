"""Blocking work off the event loop, in a daemon thread that a cancel leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_blocking"]

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
