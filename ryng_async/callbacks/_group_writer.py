"""The writing thread of a callback store: group commits, each caller answered once durable.

`GroupWriter` runs one thread that takes every item queued since its last write (a
group), has the store write the whole group durably, and settles each caller's future
on the caller's own event loop. `GroupWriter.start` sets the store up (opens its file) in
a worker thread, so no store does blocking I/O on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

import anyio

from .._exceptions import RyngError

__all__ = ["MAX_GROUP", "GroupWriter"]

MAX_GROUP: Final = 1024
"""At most this many callbacks go into one write; more wait for the next."""


class _Pending:
    __slots__ = ("future", "item", "loop")

    def __init__(self, item: Any, future: asyncio.Future[bool], loop: Any) -> None:
        self.item = item
        self.future = future
        self.loop = loop


def _settle(futures: list[asyncio.Future[bool]], results: list[bool] | BaseException) -> None:
    for index, future in enumerate(futures):
        if future.done():  # the request went away (cancelled) meanwhile
            continue
        if isinstance(results, BaseException):
            future.set_exception(results)
        else:
            future.set_result(results[index])


class GroupWriter:
    """One thread that writes queued items in groups and settles each caller's future.

    ``setup`` opens the store (run by `start` in a worker thread; it may return a smaller
    group size). ``write`` gets every item queued since the last group (up to the group
    size) and returns one bool per item; it must make the whole group durable before
    returning. ``teardown`` closes the store, on the writing thread, once it stops.
    """

    def __init__(
        self,
        name: str,
        setup: Callable[[], int | None],
        write: Callable[[list[Any]], list[bool]],
        teardown: Callable[[], None],
    ) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._setup, self._write, self._teardown = setup, write, teardown
        self.max_group = MAX_GROUP
        self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._starting: asyncio.Future[None] | None = None

    @property
    def started(self) -> bool:
        """The store is open and its thread runs (or ran)."""
        return self._thread is not None

    async def start(self) -> None:
        """Open the store (in a worker thread) and start writing; once, however often called.

        Raises:
            RyngError: the writer was closed first.
            Exception: whatever ``setup`` raised (then a later call tries again).
        """
        if self._thread is not None:
            return
        if self._closed:
            raise RyngError("the callback store is closed")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._open())
        starting = self._starting
        try:
            # A caller that stops waiting leaves the opening to finish (and the store open).
            await asyncio.shield(starting)
        finally:
            if starting.done() and starting.exception() is not None:
                self._starting = None

    async def _open(self) -> None:
        # Shielded: an opening cut short would leave a file open (and locked) by nobody.
        with anyio.CancelScope(shield=True):
            max_group = await anyio.to_thread.run_sync(self._setup)
        if max_group is not None:
            self.max_group = max_group
        with self._lock:
            if self._closed:  # closed while it opened: nothing will be written
                self._teardown()
                raise RyngError("the callback store is closed")
            # A daemon: an app never cleaned up must not hang the interpreter at exit, and
            # nothing is acknowledged before it is on disk, so dying mid-group loses nothing.
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    async def submit(self, item: Any) -> bool:
        """Queue ``item`` (starting the writer if need be); its write's result once durable."""
        if self._thread is None:
            await self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RyngError("the callback store is closed")
            self._queue.put(_Pending(item, future, loop))
        return await future

    async def aclose(self) -> None:
        """Write what is queued, then stop the thread and close the store. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                while len(group) < self.max_group:
                    try:
                        pending = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if pending is None:
                        stop = True
                        break
                    group.append(pending)
                self._write_group(group)
        finally:
            self._teardown()

    def _write_group(self, group: list[_Pending]) -> None:
        results: list[bool] | BaseException
        try:
            results = self._write([pending.item for pending in group])
        except Exception as exc:
            if len(group) > 1:
                # One bad item must not fail its neighbours: write each on its own.
                for pending in group:
                    self._write_group([pending])
                return
            results = exc
        by_loop: dict[Any, tuple[list[asyncio.Future[bool]], list[bool] | None]] = {}
        for index, pending in enumerate(group):
            futures, flags = by_loop.setdefault(
                pending.loop, ([], None if isinstance(results, BaseException) else [])
            )
            futures.append(pending.future)
            if flags is not None and not isinstance(results, BaseException):
                flags.append(results[index])
        for loop, (futures, flags) in by_loop.items():
            outcome: list[bool] | BaseException = results if flags is None else flags
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, futures, outcome)
