"""Write a callback store out as CSV or JSON Lines: `export` (``ryng-async callbacks export``)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import IO, Any, Final, Literal, TypeAlias

import msgspec

from .._callback_events import TerminalCallback
from .._exceptions import ConfigurationError
from ._stores import StoredCallback, iter_store

__all__ = ["EXPORT_COLUMNS", "ExportFormat", "export"]

ExportFormat: TypeAlias = Literal["csv", "jsonl"]
"""How `export` writes a store out: CSV with a header row, or JSON Lines."""

EXPORT_COLUMNS: Final = (
    "seq",
    "received_at",
    "callback_type",
    "call_id",
    "call_log_id",
    "event",
    "agent_id",
    "agent_username",
    "agent_num",
    "customer_num",
    "virtual_num",
    "call_created",
    "call_started",
    "call_ended",
    "call_disposed",
    "callback_time",
    "call_direction",
    "talktime",
    "call_duration",
    "parent_disposition",
    "disposition",
    "notes",
    "status",
    "recording_url",
    "leg_details",
    "custom_field_names",
    "custom_fields",
    "extra_fields",
)
"""The CSV header: every field of both callbacks; mappings and unknown fields as JSON."""

_TERMINAL_ONLY: Final = frozenset(TerminalCallback.__struct_fields__) - {
    "call_id",
    "event",
    "agent_id",
    "agent_username",
    "agent_num",
    "customer_num",
    "call_created",
    "call_started",
    "call_direction",
    "custom_field_names",
    "custom_fields",
}
FLUSH_BYTES: Final = 1 << 16


class _Export(msgspec.Struct, kw_only=True):
    seq: int
    received_at: datetime
    callback_type: str
    body: msgspec.Raw


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return str(value)


def csv_row(stored: StoredCallback) -> list[str]:
    """Return one stored callback as a row of cells under `EXPORT_COLUMNS`."""
    event = stored.event
    row = [str(stored.seq), stored.received_at.isoformat(), stored.callback_type]
    for name in EXPORT_COLUMNS[3:-1]:
        if name in _TERMINAL_ONLY and not isinstance(event, TerminalCallback):
            row.append("")
        else:
            row.append(_cell(getattr(event, name)))
    extra = stored.extra_fields()
    row.append(msgspec.json.encode(extra).decode() if extra else "")
    return row


def _jsonl_line(stored: StoredCallback) -> bytes:
    line = _Export(
        seq=stored.seq,
        received_at=stored.received_at,
        callback_type=stored.callback_type,
        # One line per callback: the body compacted, every key and value as received.
        body=msgspec.Raw(msgspec.json.format(stored.raw, indent=0)),
    )
    return msgspec.json.encode(line) + b"\n"


async def export(
    store: str | os.PathLike[str] | AsyncIterable[StoredCallback],
    out: IO[bytes],
    *,
    format: ExportFormat = "jsonl",
) -> int:
    """Write every stored callback to ``out``, streaming, in the order stored.

    ``jsonl``: one object per line, ``{"seq", "received_at", "callback_type", "body"}``,
    ``body`` being the callback as Ryng sent it (compacted to one line). ``csv``: a header
    of `EXPORT_COLUMNS`, then one row per callback (timestamps in ISO 8601, mappings and
    unknown fields as JSON, terminal-only fields empty for connect callbacks).

    Args:
        store: a store file (read without locking it: a receiver may be running), or the
            stream of a store's ``iter_events()``.
        out: a binary file to write to (e.g. ``sys.stdout.buffer``).
        format: ``"jsonl"`` or ``"csv"``.

    Returns:
        How many callbacks were written.

    Raises:
        ConfigurationError: the format is unknown, or the file is missing or not a store.
    """
    if format not in ("csv", "jsonl"):
        raise ConfigurationError(f"format must be 'csv' or 'jsonl', got {format!r}")
    events: AsyncIterable[StoredCallback] = (
        store if isinstance(store, AsyncIterable) else iter_store(store)
    )
    count = 0
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    if format == "csv":
        writer.writerow(EXPORT_COLUMNS)
    buffer = bytearray()
    iterator: AsyncIterator[StoredCallback] = aiter(events)
    try:
        async for stored in iterator:
            if format == "csv":
                writer.writerow(csv_row(stored))
            else:
                buffer += _jsonl_line(stored)
            count += 1
            if text.tell() + len(buffer) >= FLUSH_BYTES:
                await flush(text, buffer, out)
        await flush(text, buffer, out)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    await asyncio.to_thread(out.flush)
    return count


async def flush(text: io.StringIO, buffer: bytearray, out: IO[bytes]) -> None:
    """Write what is pending, off the event loop (``out`` may be a slow file)."""
    data = text.getvalue().encode() + buffer if text.tell() else bytes(buffer)
    text.seek(0)
    text.truncate()
    buffer.clear()
    if data:
        await asyncio.to_thread(out.write, data)
