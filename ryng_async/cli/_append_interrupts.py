"""Ctrl-C and SIGTERM during ``append``: the first stops the load gently.

The second cancels the requests in flight (see `Interrupts`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import anyio

from ._append_output import tell
from ._common import ExitCode
from ._progress import Meter

__all__ = ["Interrupts"]


class Interrupts:
    """SIGINT and SIGTERM: the first stops the load gently, the second cancels it.

    The first signal sets `stop`, the load's stop event (nothing new is read or sent; the
    requests in flight end, within ``--stop-grace``), says so, and cancels the scopes made
    with ``scope()`` (opening the file: nothing was sent yet). The second cancels the
    scopes made with ``scope(gentle=True)`` too: the requests still in flight end
    ``unknown``. A third takes the signal's default action.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.received: list[int] = []
        self.stop = asyncio.Event()
        self.meter: Meter | None = None
        self._args = args
        self._as_json = getattr(args, "log_format", "text") == "json"
        self._scopes: list[tuple[anyio.CancelScope, bool]] = []
        self._installed: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def code(self) -> int | None:
        """The exit code the signal received asks for, or None."""
        if not self.received:
            return None
        if self.received[0] == signal.SIGTERM:
            return ExitCode.TERMINATED
        return ExitCode.INTERRUPTED

    def scope(self, *, gentle: bool = False) -> anyio.CancelScope:
        """A cancel scope the first signal cancels (the second, if ``gentle``)."""
        scope = anyio.CancelScope()
        if len(self.received) > (1 if gentle else 0):
            scope.cancel()
        self._scopes.append((scope, gentle))
        return scope

    def _handle(self, signum: int) -> None:
        self.received.append(signum)
        if len(self.received) > 2:
            self._uninstall()
            signal.raise_signal(signum)
            return
        first = len(self.received) == 1
        if first:
            self.stop.set()
            self._tell_stopping(signum)
        else:
            name = signal.Signals(signum).name
            tell(
                self._as_json,
                "cancelling",
                f"ryng-async append: {name} again: cancelling the requests in flight (they "
                "end 'unknown': they may have been appended)",
                signal=name,
            )
        for scope, gentle in self._scopes:
            if not gentle or not first:
                scope.cancel()

    def _tell_stopping(self, signum: int) -> None:
        name = signal.Signals(signum).name
        grace = self._args.stop_grace
        if grace is None:
            grace = self._args.timeout
        if self.meter is not None:
            self.meter.stopping = True
        tell(
            self._as_json,
            "stopping",
            f"ryng-async append: {name}: stopping: nothing new is sent; waiting up to "
            f"{grace:g}s for the requests in flight to end (send it again to cancel them: "
            "they would end 'unknown')",
            signal=name,
            grace_seconds=grace,
        )

    def __enter__(self) -> Interrupts:
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                self._loop.add_signal_handler(signum, self._handle, signum)
                self._installed.append(signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        installed, self._installed = self._installed, []
        if self._loop is not None:
            for signum in installed:
                self._loop.remove_signal_handler(signum)
