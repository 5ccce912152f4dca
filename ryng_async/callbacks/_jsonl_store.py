"""`JSONLinesCallbackStore`: one JSON line per callback, appended to a text file.

Also how such a file is read without opening it for writing (`iter_jsonl`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import msgspec

from .._callback_events import CallbackEvent, parse_callback
from .._exceptions import ConfigurationError, RyngError, ValidationError
from .._sqlite import flock_nowait
from ._group_writer import GroupWriter
from ._stored import PAGE, CallbackKey, StoredCallback, callback_key, now, paged, utf8

__all__ = ["JSONLinesCallbackStore", "iter_jsonl"]


class _Line(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    received_at: datetime
    callback_type: str
    call_id: int
    event: str
    raw: str


_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Line)


def _jsonl_page(path: Path, lines: Iterator[tuple[int, bytes]]) -> list[StoredCallback]:
    page = []
    for number, line in lines:
        if not line.endswith(b"\n"):
            break  # being written right now, or torn by a crash: never acknowledged
        try:
            record = _line_decoder.decode(line)
            body = record.raw.encode()
            event = parse_callback(body)
        except (msgspec.DecodeError, ValidationError) as exc:
            raise ConfigurationError(
                f"{path} line {number} is not a stored callback: {exc}"
            ) from exc
        page.append(
            StoredCallback(seq=record.seq, received_at=record.received_at, event=event, raw=body)
        )
        if len(page) == PAGE:
            break
    return page


async def iter_jsonl(path: Path) -> AsyncIterator[StoredCallback]:
    """Every callback of the JSON Lines store at ``path``, in order, a page at a time."""
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    try:
        lines = enumerate(handle, 1)
        async for stored in paged(lambda _: _jsonl_page(path, lines)):
            yield stored
    finally:
        handle.close()


class JSONLinesCallbackStore:
    """A store that appends one JSON object per line to a text file.

    Each line holds ``seq``, ``received_at``, ``callback_type``, ``call_id``, ``event``
    and ``raw`` (the body as received, as a JSON string). Writes are grouped like the
    SQLite store's: each group is appended, flushed and, with ``fsync=True`` (the
    default), ``os.fsync``-ed before any of its callers is answered; ``fsync=False``
    survives a crash of the process but not of the machine.

    Duplicates are found through an in-memory set of every stored key, loaded when the
    store opens (about 150 bytes per callback). Making one does no I/O: the file is opened
    and read by `open`, ``async with`` or the first `add`. A last line cut short by a
    crash was never acknowledged, so it is dropped at open; any other unreadable line is
    an error. The file is locked (``flock``) so a second process cannot append to it at
    the same time.

    Args:
        path: the file; created if missing.
        fsync: flush each group to disk before answering (see above).

    Raises:
        ConfigurationError: (from `open`) the file cannot be opened, is locked by another
            process, or holds a line that is not a stored callback.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._file: Any = None
        self._keys: set[CallbackKey] = set()
        self._seq = 0
        self._writer = GroupWriter(
            f"ryng-callbacks-jsonl:{self.path.name}", self._setup, self._write, self._teardown
        )

    def __repr__(self) -> str:
        return f"JSONLinesCallbackStore({str(self.path)!r})"

    async def open(self) -> Self:
        """Open and read the file (in a worker thread) and start writing; return the store.

        ``async with`` and the first `add` open it too. Idempotent.

        Raises:
            ConfigurationError: the file cannot be opened, is locked by another process,
                or holds a line that is not a stored callback.
            RyngError: the store was closed.
        """
        await self._writer.start()
        return self

    def _setup(self) -> None:
        try:
            handle = open(self.path, "a+b")  # noqa: SIM115 - closed by _teardown
        except OSError as exc:
            raise ConfigurationError(f"cannot open callback store {self.path}: {exc}") from exc
        try:
            try:
                flock_nowait(handle.fileno())
            except OSError as exc:
                raise ConfigurationError(
                    f"callback store {self.path} is in use by another process"
                ) from exc
            handle.seek(0)
            good_end = 0
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    break  # a torn last line: never acknowledged, dropped below
                try:
                    record = _line_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise ConfigurationError(
                        f"{self.path} line {number} is not a stored callback: {exc}"
                    ) from exc
                self._keys.add((record.call_id, record.callback_type, record.event))
                self._seq = record.seq
                good_end += len(line)
            handle.truncate(good_end)
            handle.seek(0, os.SEEK_END)
        except BaseException:
            handle.close()
            raise
        self._file = handle

    def _write(self, items: list[tuple[CallbackEvent, str, datetime]]) -> list[bool]:
        results = []
        buffer = bytearray()
        added: set[CallbackKey] = set()
        for event, raw, received_at in items:
            key = callback_key(event)
            if key in self._keys or key in added:
                results.append(False)
                continue
            self._seq += 1
            line = _Line(
                seq=self._seq,
                received_at=received_at,
                callback_type=key[1],
                call_id=key[0],
                event=key[2],
                raw=raw,
            )
            _line_encoder.encode_into(line, buffer, len(buffer))
            buffer += b"\n"
            added.add(key)
            results.append(True)
        if buffer:
            end = self._file.tell()
            try:
                self._file.write(buffer)
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                self._seq -= len(added)
                with contextlib.suppress(OSError):  # keep the file a whole number of lines
                    self._file.truncate(end)
                    self._file.seek(end)
                raise RyngError(f"callback store {self.path}: write failed: {exc}") from exc
            self._keys.update(added)
        return results

    def _teardown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        """Store one callback; see `CallbackStore.add`.

        Raises:
            ValidationError: ``raw`` is not UTF-8 text.
            RyngError: the write failed or the store is closed.
        """
        return await self._writer.submit((event, utf8(raw), now()))

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, a page at a time."""
        return iter_jsonl(self.path)

    async def aclose(self) -> None:
        """Finish pending writes and close the file; later ``add`` calls fail."""
        await self._writer.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
