"""When the journal commits: at once on an idle loop, a little later on a busy one.

A commit costs the event loop about the same whatever the size of its group of records.
On a loop whose thread was busy (its CPU time at least `BUSY` of the wall time since the
last commit), with other requests in flight whose records would come soon, the next
commit waits until `SPACING` times this one's cost after it (at most `MAX_WAIT`), so
commits keep under about 2.5% of a busy loop. An idle loop, or a lone request, commits at
once: waiting there would only slow the load.
"""

from __future__ import annotations

import time
from typing import Final

__all__ = ["BUSY", "MAX_WAIT", "SPACING", "CommitPacer", "thread_time"]

BUSY: Final = 0.8
SPACING: Final = 40
MAX_WAIT: Final = 0.005

thread_time = time.thread_time
"""The loop thread's CPU time (a seam for the tests: read at each call, never bound)."""


class CommitPacer:
    """Decides when a load's next commit runs, from the cost of the last one.

    Args:
        now: the loop's time (``loop.time()``) when the journal opened.
    """

    __slots__ = ("_cpu_mark", "_grouping", "_next_commit", "_wall_mark")

    def __init__(self, now: float) -> None:
        self._grouping = False
        self._next_commit = 0.0
        self._cpu_mark = _cpu()
        self._wall_mark = now

    def commit_at(self, now: float, in_flight: int) -> float | None:
        """When to run the next commit, or None for at the end of this turn of the loop.

        ``in_flight``: requests in flight now, whose records may join the group.
        """
        if self._grouping and in_flight > 1 and self._next_commit > now:
            return self._next_commit
        return None

    def committed(self, now: float, took: float) -> None:
        """Note a commit that ended at loop time ``now`` and cost ``took`` seconds."""
        cpu = _cpu()
        elapsed = now - self._wall_mark
        self._grouping = elapsed > 0 and (cpu - self._cpu_mark) >= BUSY * elapsed
        self._cpu_mark, self._wall_mark = cpu, now
        self._next_commit = now + min(SPACING * took, MAX_WAIT)


def _cpu() -> float:
    return thread_time()
