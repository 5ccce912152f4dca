"""Settings and defaults: `RetryPolicy` and every ``DEFAULT_*`` constant in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._validate import check_retry_policy

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_KEEP_FAILED_LEADS",
    "DEFAULT_KEEP_INVALID_LEADS",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_MARGIN",
    "MAX_RESPONSE_BYTES",
    "RetryPolicy",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for one attempt (connect, send, answer)."""
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds allowed to open a connection (part of `DEFAULT_TIMEOUT`)."""
DEFAULT_MAX_CONNECTIONS = 100
"""Size of the client's connection pool."""
DEFAULT_KEEPALIVE_TIMEOUT = 4.0
"""Seconds a pooled connection may idle before it is closed instead of reused.

Below the 5 s of Node, uvicorn and Apache (undici's default too): a request written onto a
connection the server has just closed would end without an answer, ``unknown``.
"""
KEEPALIVE_MARGIN = 1.0
"""Seconds taken off a server's ``Keep-Alive: timeout=N`` hint (undici's threshold)."""
MAX_RESPONSE_BYTES = 1 << 20
"""Largest response body the client reads; a longer one is an `APIError`."""

DEFAULT_BATCH_SIZE = 500
"""Most leads in one bulk request."""
DEFAULT_MAX_BATCH_BYTES = 4 << 20
"""Most bytes in one bulk request body."""
DEFAULT_CONCURRENCY = 8
"""Most bulk requests in flight at once."""
DEFAULT_MAX_CONSECUTIVE_FAILURES = 20
"""Batches in a row not accepted (after their retries) before a bulk load stops."""
DEFAULT_KEEP_FAILED_LEADS = 100_000
"""Most leads of batches not accepted a bulk report holds for `BulkReport.failed_leads`.

Past it (a long load with scattered failures), the report keeps only their input
positions (`BulkReport.failed_ranges`), so memory stays flat: about 30 MB at most."""

DEFAULT_KEEP_INVALID_LEADS = 10_000
"""Most invalid leads a bulk report describes in `BulkReport.invalid_leads` (about 3 MB).

``BulkReport.invalid`` counts them all; ``on_invalid`` is given every one as it is found."""

DEFAULT_MAX_ATTEMPTS = 5
PACED_ATTEMPTS_FACTOR = 4
"""A 429 or 503 does not use up one of ``max_attempts``, up to this many times as many."""
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
DEFAULT_RETRY_TIMEOUT = 300.0
DEFAULT_RETRY_BUDGET = 500
RETRY_COST = 5
SUCCESS_REFUND = 1
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFINITE_STATUSES = frozenset({503})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how often a request is tried again.

    Attempts back off exponentially with full jitter (a delay drawn uniformly from
    ``[0, min(max_delay, initial_delay * 2 ** (attempt - 1))]``). A ``Retry-After`` from
    the server replaces the drawn delay, capped at ``max_retry_after``.

    Args:
        max_attempts: attempts per request, the first included (1 turns retries off).
            An attempt answered 429 or 503 paces the load instead of using one up, up to
            4 times ``max_attempts`` in all (a server that never lets a request in).
        initial_delay: backoff ceiling, in seconds, before the second attempt.
        max_delay: cap on any backoff delay, in seconds.
        max_retry_after: cap on how long a server's ``Retry-After`` is honoured.
        timeout: total seconds one request may spend across its attempts and waits;
            None for no limit.
        retry_statuses: HTTP statuses worth another attempt (403 and other 4xx never are).
        definite_statuses: the 5xx statuses that prove, whatever their body, that the
            request was not processed; 503 by default (RFC 9110: the server did not
            handle it; nginx's ``limit_req`` and a load balancer with no healthy target
            answer it before forwarding). Ryng's own JSON error body proves it at any
            status, and so does a 4xx (429, 413...); any other 5xx (a proxy's 502 or 504)
            may have been processed: it is ambiguous. Add 502/504 if nothing between you
            and Ryng can answer them after forwarding a request; remove 503 if a proxy of
            yours answers it after an upstream reset (Envoy does).
        retry_ambiguous: resend after a timeout, a drop or an ambiguous 5xx that may have
            been processed. Off by default: the API has no idempotency key, so a resent
            batch may call customers twice (such leads are counted in ``maybe_duplicated``).
        budget: capacity of the client-wide retry budget, a token bucket in the style of
            botocore's retry quota: each retry costs ``retry_cost``, each
            success refunds ``success_refund``, and with the bucket empty no request is
            retried, so a failing server is not hammered by every batch at once.
            A retry after a 429 or a 503 costs nothing: those pace the load instead.
            None turns the budget off.
        retry_cost: tokens one retry takes from the budget.
        success_refund: tokens a success gives back.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    timeout: float | None = DEFAULT_RETRY_TIMEOUT
    retry_statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)
    definite_statuses: frozenset[int] = field(default=DEFINITE_STATUSES)
    retry_ambiguous: bool = False
    budget: int | None = DEFAULT_RETRY_BUDGET
    retry_cost: int = RETRY_COST
    success_refund: int = SUCCESS_REFUND

    def __post_init__(self) -> None:
        check_retry_policy(self)

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that tries every request exactly once."""
        return cls(max_attempts=1)
