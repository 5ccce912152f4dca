"""The numbers a deduplicating load has sent: exact, in bounded memory.

The first numbers are held in a set; past ``memory_limit`` of them they move to a
temporary SQLite file (a B-tree on disk, with SQLite's small page cache), and a Bloom
filter of fixed size in memory answers "surely new" for almost every new number without
touching the file. A number the filter may have seen is looked up in the file, so the
answer is always exact; only the share of lookups grows as the filter fills.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

__all__ = ["SeenNumbers"]

_MEMORY_LIMIT = 50_000
_FILTER_BITS = 1 << 25  # 4 MiB: at 2,000,000 numbers, about 1 new number in 200 is looked up
_PENDING = 10_000


class SeenNumbers:
    """A set of strings that tells whether a number was added before (`add`).

    Call `close` when done: it removes the temporary file, if one was made.
    """

    def __init__(
        self, *, memory_limit: int = _MEMORY_LIMIT, filter_bits: int = _FILTER_BITS
    ) -> None:
        self._memory: set[str] | None = set()
        self._memory_limit = memory_limit
        self._bits = filter_bits
        self._filter: bytearray | None = None
        self._pending: set[str] = set()
        self._dir: str | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def spilled(self) -> bool:
        """The numbers are in a file now (more than ``memory_limit`` were added)."""
        return self._db is not None

    def add(self, number: str) -> bool:
        """Add ``number``; return True if it is new, False if it was added before."""
        memory = self._memory
        if memory is not None:
            if number in memory:
                return False
            memory.add(number)
            if len(memory) > self._memory_limit:
                self._spill(memory)
            return True
        if number in self._pending:
            return False
        if self._maybe_seen(number) and self._in_file(number):
            return False
        self._pending.add(number)
        if len(self._pending) >= _PENDING:
            self._write()
        return True

    def close(self) -> None:
        """Drop what is held and remove the temporary file. Idempotent."""
        self._memory = set()
        self._pending = set()
        self._filter = None
        db, self._db = self._db, None
        directory, self._dir = self._dir, None
        if db is not None:
            db.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _spill(self, memory: set[str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="ryng-dedupe-")
        db = sqlite3.connect(os.path.join(self._dir, "seen.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE seen (number TEXT PRIMARY KEY) WITHOUT ROWID")
        self._db = db
        self._filter = bytearray(self._bits // 8)
        self._memory = None
        self._pending = memory
        self._write()

    def _slots(self, number: str) -> tuple[int, int, int]:
        # Three probes from one 64-bit hash (Kirsch-Mitzenmacher double hashing).
        value = hash(number) & 0xFFFFFFFFFFFFFFFF
        first, second = value & 0xFFFFFFFF, (value >> 32) | 1
        bits = self._bits
        return first % bits, (first + second) % bits, (first + 2 * second) % bits

    def _maybe_seen(self, number: str) -> bool:
        bits = self._filter
        assert bits is not None  # noqa: S101 - set once spilled
        return all(bits[slot >> 3] & (1 << (slot & 7)) for slot in self._slots(number))

    def _in_file(self, number: str) -> bool:
        assert self._db is not None  # noqa: S101 - set once spilled
        found = self._db.execute("SELECT 1 FROM seen WHERE number = ?", (number,)).fetchone()
        return found is not None

    def _write(self) -> None:
        db, bits = self._db, self._filter
        assert db is not None  # noqa: S101 - set once spilled
        assert bits is not None  # noqa: S101 - set once spilled
        pending, self._pending = self._pending, set()
        for number in pending:
            for slot in self._slots(number):
                bits[slot >> 3] |= 1 << (slot & 7)
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((n,) for n in sorted(pending)))
        db.execute("COMMIT")
