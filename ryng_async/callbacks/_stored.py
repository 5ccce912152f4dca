"""What the callback stores have in common: a stored callback, its key, the protocol.

`StoredCallback` is a callback as a store keeps it; `callback_key` is what makes two
callbacks the same; `CallbackStore` is what the receiver needs of a store. The helpers
below are shared by the two stores of this package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

import msgspec

from .._callback_events import CallbackEvent, ConnectCallback, TerminalCallback, parse_callback
from .._exceptions import ValidationError

__all__ = [
    "PAGE",
    "CallbackKey",
    "CallbackStore",
    "StoredCallback",
    "callback_key",
    "now",
    "paged",
    "stored_callback",
    "utf8",
]

CallbackKey: TypeAlias = tuple[int, str, str]
"""``(callID, callbackType, event)``: what makes a callback the same callback."""

PAGE: Final = 1000
"""Rows read per round trip to the reading thread when iterating a store."""

_WIRE_NAMES: Final = {
    cls: frozenset({f.encode_name for f in msgspec.structs.fields(cls)} | {"callbackType"})
    for cls in (ConnectCallback, TerminalCallback)
}
_any_object = msgspec.json.Decoder(dict[str, Any])


def callback_key(event: CallbackEvent) -> CallbackKey:
    """Return the dedupe key of a callback: ``(callID, callbackType, event)``."""
    kind = "terminal" if isinstance(event, TerminalCallback) else "connect"
    return (event.call_id, kind, event.event)


class StoredCallback(msgspec.Struct, frozen=True, kw_only=True):
    """A callback as a store keeps it: the parsed event, the raw body and when it came.

    Attributes:
        seq: its number in the store, from 1, in the order stored.
        received_at: when the receiver stored it (UTC).
        event: the parsed callback, every known field typed.
        raw: the request body exactly as Ryng sent it, unknown fields included.
    """

    seq: int
    received_at: datetime
    event: CallbackEvent
    raw: bytes

    @property
    def key(self) -> CallbackKey:
        """The dedupe key, ``(callID, callbackType, event)``."""
        return callback_key(self.event)

    @property
    def callback_type(self) -> str:
        """``"connect"`` or ``"terminal"``."""
        return "terminal" if isinstance(self.event, TerminalCallback) else "connect"

    def extra_fields(self) -> dict[str, Any]:
        """Return the fields of the raw body that the event's struct does not know.

        Ryng may add fields; they are kept in `raw` and surface here, decoded.
        """
        body = _any_object.decode(self.raw)
        known = _WIRE_NAMES[type(self.event)]
        return {name: value for name, value in body.items() if name not in known}


@runtime_checkable
class CallbackStore(Protocol):
    """What the receiver needs from a store; implement it to keep callbacks elsewhere.

    ``add`` must return only once the callback is durable (the receiver answers 200 right
    after it), must be safe to call concurrently, and must recognise a callback it already
    holds by `callback_key`.
    """

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        """Store one callback durably.

        Args:
            event: the parsed callback.
            raw: its request body, as received.

        Returns:
            True if it was stored, False if the store already held its key.
        """
        ...

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, streaming (never all at once)."""
        ...

    async def aclose(self) -> None:
        """Finish pending writes and release the store; later ``add`` calls fail."""
        ...


def now() -> datetime:
    """The time a callback is stored at (UTC)."""
    return datetime.now(UTC)


def utf8(raw: bytes) -> str:
    """Return the body as text; JSON is UTF-8 (RFC 8259), and both stores keep text."""
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError as exc:
        raise ValidationError(f"callback body is not UTF-8: {exc}") from exc


def stored_callback(seq: int, received_at: str | datetime, raw: str | bytes) -> StoredCallback:
    """A `StoredCallback` from what a store keeps: its number, its time and the raw body."""
    body = raw.encode() if isinstance(raw, str) else bytes(raw)
    return StoredCallback(
        seq=seq,
        received_at=(
            datetime.fromisoformat(received_at) if isinstance(received_at, str) else received_at
        ),
        event=parse_callback(body),
        raw=body,
    )


async def paged(read_page: Callable[[int], list[StoredCallback]]) -> AsyncIterator[StoredCallback]:
    """Yield the pages ``read_page(after_seq)`` returns, each read in a worker thread."""
    after = 0
    while True:
        page = await asyncio.to_thread(read_page, after)
        if not page:
            return
        for stored in page:
            yield stored
        after = page[-1].seq
