"""Retry decisions as pure functions, plus the client-wide retry budget.

Nothing here does I/O or sleeps, so every decision is tested exhaustively without a
server. Backoff is "full jitter" from
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/ and the budget is
botocore's retry quota (a token bucket shared by every request of a client).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ._config import RetryPolicy
from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConnectError,
    RateLimitError,
    RyngError,
    ServerError,
)

__all__ = [
    "RetryBudget",
    "RetryDetails",
    "backoff_delay",
    "is_definite",
    "is_retryable",
    "may_have_been_processed",
    "paces",
    "parse_retry_after",
    "retry_after_of",
    "retry_delay",
]


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """What an ``on_retry`` hook is told before the SDK waits and tries again.

    Attributes:
        campaign_id: the campaign of the request.
        batch_index: the batch being retried in a bulk load, None for a single call.
        attempt: the attempt that just failed (1 for the first).
        delay: seconds the SDK will wait before the next attempt.
        reason: a short description of the failure (``"HTTP 503"``, ``"connect error"``).
        error: the error of the failed attempt.
    """

    campaign_id: str
    batch_index: int | None
    attempt: int
    delay: float
    reason: str
    error: RyngError


def is_definite(status: int, *, ryng_error: bool, policy: RetryPolicy) -> bool:
    """Say whether an HTTP answer (not a 2xx) proves its request was not processed.

    The table, for an answer that is not a success:

    =====================================  =========================================
    answer                                 the request
    =====================================  =========================================
    Ryng's JSON error body, any status     was not processed (definite)
    3xx, 4xx (403, 413, 429...)            was not processed (definite)
    5xx in ``policy.definite_statuses``    was not processed (definite; 503 by default)
    any other 5xx (502, 504, an HTML 500)  may have been (ambiguous: a proxy gave up)
    =====================================  =========================================

    A 2xx that cannot be read is ambiguous too (`UnreadableResponseError`).
    """
    if ryng_error or status < 500:
        return True
    return status in policy.definite_statuses


def may_have_been_processed(error: RyngError) -> bool:
    """Say whether a failed attempt may still have appended its leads.

    The one home of that rule: an `AmbiguousError` may have (a timeout or a drop after
    sending, a 5xx that `is_definite` does not prove, or a 2xx answer that could not be
    read: `UnreadableResponseError`); every other error is definite.
    """
    return isinstance(error, AmbiguousError)


def paces(error: RyngError) -> bool:
    """Say whether ``error`` asks the client to slow down: a 429, or a 503 (RFC 9110).

    Both pause the client for their ``Retry-After`` and tell the limiter (AIMD).
    """
    return isinstance(error, RateLimitError) or (
        isinstance(error, ServerError) and error.status == 503
    )


def is_retryable(error: RyngError, policy: RetryPolicy) -> bool:
    """Say whether ``error`` is worth another attempt under ``policy``.

    Connection failures that surely never reached the server and the policy's statuses
    (429, 500, 502, 503, 504 by default) when the answer was definite are; 403 and every
    other 4xx never are; an ambiguous failure only when ``policy.retry_ambiguous`` (and,
    if it came with a 3xx-5xx status, that status is among the policy's).
    """
    if isinstance(error, AuthenticationError):
        return False
    if isinstance(error, APIError):
        return error.status in policy.retry_statuses
    if isinstance(error, ConnectError):
        return True
    if isinstance(error, AmbiguousError):
        status = error.status
        if status is not None and status >= 300 and status not in policy.retry_statuses:
            return False
        return policy.retry_ambiguous
    return False


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Return the full-jitter delay before attempt ``attempt + 1``.

    Drawn uniformly from ``[0, min(max_delay, initial_delay * 2 ** (attempt - 1))]``.
    """
    exponent = min(max(attempt - 1, 0), 62)
    ceiling = min(policy.max_delay, policy.initial_delay * float(2**exponent))
    return rng.uniform(0.0, ceiling)


def retry_delay(error: RyngError, attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Return the wait before the next attempt: ``Retry-After`` if given, else backoff.

    A server's ``Retry-After`` (on a 429 or a 503) is honoured up to
    ``policy.max_retry_after``.
    """
    retry_after = retry_after_of(error)
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    return backoff_delay(attempt, policy, rng)


def retry_after_of(error: RyngError) -> float | None:
    """The ``Retry-After`` seconds a 429 or a 503 came with, else None."""
    if isinstance(error, RateLimitError | ServerError):
        return error.retry_after
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP date.

    Returns the seconds to wait (never negative), or None if the header is absent or
    unreadable. ``now`` defaults to the current UTC time and is given by tests.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max((when - now).total_seconds(), 0.0)


class RetryBudget:
    """A token bucket that rations retries across every request of a client.

    Each retry takes ``cost`` tokens; each success gives ``refund`` back, up to the
    capacity. With too few tokens left, a retryable failure is final instead. This keeps
    a broken server from being hit by ``concurrency x max_attempts`` requests at once.
    """

    __slots__ = ("_capacity", "_cost", "_refund", "_tokens")

    def __init__(self, capacity: int | None, *, cost: int, refund: int) -> None:
        self._capacity = capacity
        self._tokens = capacity or 0
        self._cost = cost
        self._refund = refund

    @classmethod
    def for_policy(cls, policy: RetryPolicy) -> RetryBudget:
        """Return a full budget sized by ``policy``."""
        return cls(policy.budget, cost=policy.retry_cost, refund=policy.success_refund)

    @property
    def tokens(self) -> int | None:
        """Tokens left, or None for an unlimited budget."""
        return None if self._capacity is None else self._tokens

    def try_acquire(self) -> bool:
        """Take the cost of one retry; False (and nothing taken) if the bucket is short."""
        if self._capacity is None:
            return True
        if self._tokens < self._cost:
            return False
        self._tokens -= self._cost
        return True

    def record_success(self) -> None:
        """Give back the refund of one success."""
        if self._capacity is not None:
            self._tokens = min(self._capacity, self._tokens + self._refund)
