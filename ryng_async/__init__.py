"""ryng_async: an asyncio SDK for Ryng's Append Campaign API.

Typed msgspec models, one aiohttp connection pool, retries that never resend a request
that may have been processed, and a bulk loader that accounts for every lead.
"""

import logging

from ._bulk import BatchStream, BulkOptions, ProgressHook
from ._callback_events import (
    CallbackEvent,
    ConnectCallback,
    TerminalCallback,
    parse_callback,
)
from ._client import LeadInput, RetryHook, RyngClient, SheetInput
from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    RetryPolicy,
)
from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    RyngError,
    ServerError,
    TransportError,
    ValidationError,
)
from ._models import AgentMapping, AppendResponse, Lead
from ._report import BatchResult, BulkReport, Outcome, Progress
from ._retry import RetryDetails
from ._validate import InvalidLead
from ._version import __version__

# A library logs to its logger and lets the application decide where that goes.
logging.getLogger("ryng_async").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "APIError",
    "AgentMapping",
    "AmbiguousError",
    "AppendResponse",
    "AuthenticationError",
    "BatchResult",
    "BatchStream",
    "BulkOptions",
    "BulkReport",
    "CallbackEvent",
    "ConfigurationError",
    "ConnectCallback",
    "ConnectError",
    "InvalidLead",
    "Lead",
    "LeadInput",
    "Outcome",
    "Progress",
    "ProgressHook",
    "RateLimitError",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "RyngClient",
    "RyngError",
    "ServerError",
    "SheetInput",
    "TerminalCallback",
    "TransportError",
    "ValidationError",
    "__version__",
    "parse_callback",
]
