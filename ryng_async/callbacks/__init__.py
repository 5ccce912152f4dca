"""Receive Ryng's callbacks durably, and join them back to the leads of a load.

::

    from aiohttp import web
    from ryng_async.callbacks import RedactingAccessLogger, SQLiteCallbackStore, create_app

    store = SQLiteCallbackStore("callbacks.db")
    app = create_app(store=store, secret="a-long-random-url-safe-secret")
    web.run_app(app, port=8080, access_log_class=RedactingAccessLogger)

* `create_app`: the aiohttp.web receiver (store first, then 200; 400 / 403 / 405 / 413 for
  bad input, 500 only when the store fails).
* `SQLiteCallbackStore` (the default), `JSONLinesCallbackStore`, or your own
  `CallbackStore`; `export` writes a store out as CSV or JSON Lines.
* `reconcile`: lead by lead, what became of a load (`LeadStatus`, `ReconcileSummary`).
* The callback models and `parse_callback`, as in `ryng_async`.
"""

from .._callback_events import (
    CallbackEvent,
    ConnectCallback,
    TerminalCallback,
    encode_callback,
    parse_callback,
)
from ._app import (
    CALLBACK_PATH,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY,
    CallbackHandler,
    RedactingAccessLogger,
    SecretLogFilter,
    callback_url,
    create_app,
    serve,
)
from ._export import EXPORT_COLUMNS, ExportFormat, export
from ._reconcile import (
    LeadStatus,
    ReconcileFormat,
    ReconcileSummary,
    Reconciliation,
    Status,
    reconcile,
    reconcile_to_file,
)
from ._stores import (
    DEFAULT_STORE_PATH,
    CallbackKey,
    CallbackStore,
    JSONLinesCallbackStore,
    SQLiteCallbackStore,
    StoredCallback,
    callback_key,
    iter_store,
)

__all__ = [
    "CALLBACK_PATH",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_STORE_PATH",
    "EXPORT_COLUMNS",
    "CallbackEvent",
    "CallbackHandler",
    "CallbackKey",
    "CallbackStore",
    "ConnectCallback",
    "ExportFormat",
    "JSONLinesCallbackStore",
    "LeadStatus",
    "ReconcileFormat",
    "ReconcileSummary",
    "Reconciliation",
    "RedactingAccessLogger",
    "SQLiteCallbackStore",
    "SecretLogFilter",
    "Status",
    "StoredCallback",
    "TerminalCallback",
    "callback_key",
    "callback_url",
    "create_app",
    "encode_callback",
    "export",
    "iter_store",
    "parse_callback",
    "reconcile",
    "reconcile_to_file",
    "serve",
]
