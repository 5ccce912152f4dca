"""Where received callbacks are kept: the `CallbackStore` protocol and two stores.

`SQLiteCallbackStore` (the default) keeps every callback in one SQLite file in WAL mode;
`JSONLinesCallbackStore` appends one JSON line per callback. Both write from one thread
that commits whatever arrived while the previous commit was on disk (a group commit), and
both answer ``add`` only once the callback is on disk, so a 200 sent after ``add`` never
covers a callback that a crash could lose.

A callback is known by its dedupe key ``(callID, callbackType, event)``: Ryng resends a
callback it got no 200 for, and the store keeps the first copy only.

The parts: `StoredCallback`, `callback_key` and the protocol in ``_stored``; the writing
thread in ``_group_writer``; each store in ``_sqlite_store`` and ``_jsonl_store``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from .._exceptions import ConfigurationError
from .._sqlite import SQLITE_MAGIC
from ._jsonl_store import JSONLinesCallbackStore, iter_jsonl
from ._sqlite_store import SQLiteCallbackStore, iter_sqlite
from ._stored import CallbackKey, CallbackStore, StoredCallback, callback_key

__all__ = [
    "DEFAULT_STORE_PATH",
    "CallbackKey",
    "CallbackStore",
    "JSONLinesCallbackStore",
    "SQLiteCallbackStore",
    "StoredCallback",
    "callback_key",
    "iter_store",
]

DEFAULT_STORE_PATH: Final = "ryng-callbacks.db"
"""Where `create_app` keeps callbacks when given no store: a file in the working directory."""


def iter_store(path: str | os.PathLike[str]) -> AsyncIterator[StoredCallback]:
    """Read a store file without opening it for writing (a receiver may be running).

    The kind of store is told by the file's first bytes: SQLite, else JSON Lines.

    Args:
        path: a `SQLiteCallbackStore` or `JSONLinesCallbackStore` file.

    Returns:
        An async iterator of every stored callback, in the order stored, streaming.

    Raises:
        ConfigurationError: (while iterating) the file is missing or not a store.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    return iter_sqlite(path) if head == SQLITE_MAGIC else iter_jsonl(path)
