"""ryng_async: an asyncio SDK for Ryng's Append Campaign API.

Typed msgspec models, one aiohttp connection pool, retries that never resend a request
that may have been processed, and a bulk loader that accounts for every lead.
"""

import logging

from ._bulk import BatchStream, BulkOptions
from ._callback_events import (
    CallbackEvent,
    ConnectCallback,
    TerminalCallback,
    parse_callback,
)
from ._client import RyngClient
from ._clock import Clock, EventLoopClock
from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEP_FAILED_LEADS,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    RetryPolicy,
)
from ._events import (
    AttemptEnded,
    AttemptStarting,
    BatchPacked,
    BatchSettled,
    LoadEnded,
    LoadEvent,
    LoadObserver,
    LoggingObserver,
    ProgressHook,
    RetryHook,
)
from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    ResourceError,
    ResourceLimitError,
    RyngError,
    ServerError,
    TransportError,
    UnreadableResponseError,
    ValidationError,
)
from ._models import AgentMapping, AppendResponse, CampaignOptions, Lead, LeadInput
from ._ratelimit import AdaptiveLimiter, Limiter
from ._report import BatchResult, BulkReport, InvalidLead, Outcome, Progress
from ._retry import RetryDetails
from ._sheet import SheetInput
from ._version import __version__

# A library logs to its logger and lets the application decide where that goes.
logging.getLogger("ryng_async").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_KEEP_FAILED_LEADS",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "APIError",
    "AdaptiveLimiter",
    "AgentMapping",
    "AmbiguousError",
    "AppendResponse",
    "AttemptEnded",
    "AttemptStarting",
    "AuthenticationError",
    "BatchPacked",
    "BatchResult",
    "BatchSettled",
    "BatchStream",
    "BulkOptions",
    "BulkReport",
    "CallbackEvent",
    "CampaignOptions",
    "Clock",
    "ConfigurationError",
    "ConnectCallback",
    "ConnectError",
    "EventLoopClock",
    "InvalidLead",
    "Lead",
    "LeadInput",
    "Limiter",
    "LoadEnded",
    "LoadEvent",
    "LoadObserver",
    "LoggingObserver",
    "Outcome",
    "Progress",
    "ProgressHook",
    "RateLimitError",
    "ResourceError",
    "ResourceLimitError",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "RyngClient",
    "RyngError",
    "ServerError",
    "SheetInput",
    "TerminalCallback",
    "TransportError",
    "UnreadableResponseError",
    "ValidationError",
    "__version__",
    "parse_callback",
]
