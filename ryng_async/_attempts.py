"""What the metrics and tracing observers share: open attempts, and an error's low-cardinality name.

An attempt's `AttemptStarting` and `AttemptEnded` are told in the task that sends it, and a
task sends one request at a time, so the task tells concurrent attempts apart exactly,
whatever the campaign, batch or load. An attempt cut off by a cancel (or by an observer
that raised at its start) never gets its `AttemptEnded`; it is closed when its task makes
its next attempt, or once its task is done.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from . import APIError, RyngError

__all__ = ["OpenAttempts", "error_type"]

_T = TypeVar("_T")


def error_type(error: RyngError) -> str:
    """A low-cardinality name for an attempt's error: its HTTP status, else its class.

    ``"429"``, ``"503"``, ``"ConnectError"``, ``"AmbiguousError"``: never the message,
    which may quote a lead.
    """
    if isinstance(error, APIError):
        return str(error.status)
    return type(error).__name__


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class OpenAttempts(Generic[_T]):
    """The attempts in flight, one per task, each with what its observer keeps for it."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[asyncio.Task[object] | None, _T] = {}

    def __len__(self) -> int:
        return len(self._open)

    def start(self, value: _T) -> list[_T]:
        """Open the current task's attempt; return the attempts left open to close now.

        Those are this task's earlier attempt (it was cut off) and those of tasks that
        have ended.
        """
        task = _current_task()
        stale = [self._open.pop(task)] if task in self._open else []
        stale += self.sweep()
        self._open[task] = value
        return stale

    def end(self) -> _T | None:
        """Close the current task's attempt; return its value (None if none is open)."""
        return self._open.pop(_current_task(), None)

    def sweep(self) -> list[_T]:
        """Close and return the attempts of tasks that have ended."""
        done = [task for task in self._open if task is not None and task.done()]
        return [self._open.pop(task) for task in done]
