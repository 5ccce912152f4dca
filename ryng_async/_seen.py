"""The numbers a deduplicating load has sent: exact, in bounded memory.

The first numbers are held in a set. Past ``memory_limit`` of them they move to a
temporary SQLite file (an integer B-tree read through SQLite's small page cache): an
E.164 number (``+`` then up to 15 digits, the first not 0) is its own integer key, so the
file answers exactly. In front of it, a Bloom filter of fixed size says "surely new" for
almost every new number, so only the numbers it may have seen are looked up (one query a
chunk); new numbers wait in a bounded buffer and go into the file sorted, many at a time,
so an insert touches each page of the B-tree about once per flush.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

import msgspec

__all__ = ["SeenNumbers"]

_MEMORY_LIMIT = 50_000
_FILTER_BITS = 1 << 25  # 4 MiB: at 2,000,000 numbers, about 1 new number in 200 is looked up
_PENDING_LIMIT = 65_536  # new numbers held before they are written to the file (~5 MB)
_SPILL_CHUNK = 1000
_PARAMETERS = 500  # per lookup statement without JSON (SQLite before 3.32 allows 999)
_MASK64 = (1 << 64) - 1
_encode = msgspec.json.Encoder().encode


def _key(number: str) -> int | None:
    """The integer an E.164 number stands for, or None for any other string."""
    digits = number[1:]
    if number[:1] == "+" and 0 < len(digits) <= 15 and digits.isascii() and digits.isdigit():
        return int(digits) if digits[0] != "0" else None
    return None


class SeenNumbers:
    """A set of numbers that tells which of a chunk were added before (`add_many`).

    Call `close` when done: it removes the temporary file, if one was made.

    Args:
        memory_limit: numbers held in a plain set before the rest go to a file.
        filter_bits: the Bloom filter's size in bits (a power of two, at least 2**10).
        pending_limit: new numbers held in memory before they are written to the file.
    """

    def __init__(
        self,
        *,
        memory_limit: int = _MEMORY_LIMIT,
        filter_bits: int = _FILTER_BITS,
        pending_limit: int = _PENDING_LIMIT,
    ) -> None:
        if filter_bits < 1 << 10 or filter_bits & (filter_bits - 1):
            raise ValueError(f"filter_bits must be a power of two >= 1024, got {filter_bits}")
        self._memory: set[str] | None = set()
        self._memory_limit = memory_limit
        self._bits = filter_bits
        self._filter = bytearray()
        self._pending: set[str] = set()
        self._pending_limit = pending_limit
        self._other: set[str] = set()  # not E.164 (validation refuses those): never spilled
        self._dir: str | None = None
        self._db: sqlite3.Connection | None = None
        self._json = True

    @property
    def spilled(self) -> bool:
        """The numbers are in a file now (more than ``memory_limit`` were added)."""
        return self._db is not None

    def add_many(self, numbers: list[str]) -> list[bool]:
        """Add ``numbers``; for each, True if it is new (not added before, nor earlier here)."""
        memory = self._memory
        if memory is not None:
            fresh = []
            for number in numbers:
                new = number not in memory
                if new:
                    memory.add(number)
                fresh.append(new)
            if len(memory) > self._memory_limit:
                self._spill(memory)
            return fresh
        return self._add_spilled(numbers)

    def close(self) -> None:
        """Drop what is held and remove the temporary file. Idempotent."""
        self._memory = set()
        self._other = set()
        self._pending = set()
        self._filter = bytearray()
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
        db.execute("CREATE TABLE seen (k INTEGER PRIMARY KEY)")
        try:  # SQLite's JSON functions: built in since 3.38, an option before
            db.execute("SELECT value FROM json_each('[1]')").fetchall()
        except sqlite3.OperationalError:
            self._json = False
        self._db = db
        self._filter = bytearray(self._bits // 8)
        self._memory = None
        numbers = list(memory)
        memory.clear()
        for first in range(0, len(numbers), _SPILL_CHUNK):  # a chunk's probes at a time
            self._add_spilled(numbers[first : first + _SPILL_CHUNK])

    def _add_spilled(self, numbers: list[str]) -> list[bool]:
        bits, pending, mask = self._filter, self._pending, self._bits - 1
        # The filter's three slots from the string's own hash (cached by the string).
        slots = []
        maybe = []
        for number in numbers:
            code = hash(number) & _MASK64
            a, b, c = code & mask, (code >> 21) & mask, ((code >> 42) ^ (code >> 11)) & mask
            slots.append((a, b, c))
            if (
                bits[a >> 3] & (1 << (a & 7))
                and bits[b >> 3] & (1 << (b & 7))
                and bits[c >> 3] & (1 << (c & 7))
                and number not in pending
            ):
                maybe.append(number)
        known = self._in_file(maybe) if maybe else set()
        fresh: list[bool] = []
        for number, (a, b, c) in zip(numbers, slots, strict=True):
            new = number not in pending and number not in known
            if new:
                pending.add(number)
                bits[a >> 3] |= 1 << (a & 7)
                bits[b >> 3] |= 1 << (b & 7)
                bits[c >> 3] |= 1 << (c & 7)
            fresh.append(new)
        if len(pending) >= self._pending_limit:
            self._write()
        return fresh

    def _in_file(self, numbers: list[str]) -> set[str]:
        """Which of ``numbers`` the file (or the odd ones kept apart) holds: one query."""
        db = self._db
        assert db is not None  # noqa: S101 - set once spilled
        by_key = {}
        found = set()
        for number in numbers:
            key = _key(number)
            if key is None:
                if number in self._other:
                    found.add(number)
            else:
                by_key[key] = number
        keys = sorted(by_key)
        if self._json:
            query = "SELECT k FROM seen WHERE k IN (SELECT value FROM json_each(?))"
            found.update(by_key[k] for (k,) in db.execute(query, (_encode(keys),)))
            return found
        for first in range(0, len(keys), _PARAMETERS):
            part = keys[first : first + _PARAMETERS]
            query = f"SELECT k FROM seen WHERE k IN ({','.join('?' * len(part))})"  # noqa: S608 - marks only
            found.update(by_key[k] for (k,) in db.execute(query, part))
        return found

    def _write(self) -> None:
        db = self._db
        assert db is not None  # noqa: S101 - set once spilled
        pending, self._pending = self._pending, set()
        keys = []
        for number in pending:
            key = _key(number)
            if key is None:
                self._other.add(number)
            else:
                keys.append(key)
        keys.sort()
        db.execute("BEGIN")
        if self._json:
            db.execute(
                "INSERT OR IGNORE INTO seen SELECT value FROM json_each(?)", (_encode(keys),)
            )
        else:
            db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((key,) for key in keys))
        db.execute("COMMIT")
