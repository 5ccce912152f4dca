"""The ryng_async error tree.

Every error the SDK raises derives from one root:

    RyngError
    ├── ConfigurationError      bad client settings (missing token, bad subdomain, ...)
    ├── ValidationError         bad input found before sending; nothing was sent
    ├── APIError                the server answered with an error   (.status, .message, .body)
    │   ├── AuthenticationError     403 / "Unauthorized Token"
    │   ├── RateLimitError          429 (.retry_after seconds or None)
    │   └── ServerError             Ryng's 5xx, a 503, or 200 with "error": true
    ├── TransportError          no usable answer
    │   ├── ConnectError            the request surely never reached the server
    │   └── AmbiguousError          it may have been processed (timeout or drop after sending,
    │       │                       a gateway's 502/504, a 5xx that is not Ryng's JSON:
    │       │                       .status, .body)
    │       └── UnreadableResponseError a 2xx answer that could not be read
    └── ResourceError           a resource of the SDK's own failed while it ran
        ├── ResourceLimitError      the process ran out of file descriptors or memory
        ├── RedisLimiterError       the shared rate limit's Redis unreachable, lost or
        │   │                       refusing (in `ryng_async.redis`)
        │   └── RedisAccessError        Redis refused the password or the ACL user's
        │                               rights: also a `ConfigurationError`
        └── CheckpointError         the checkpoint journal could not be written (disk
            │                       full, file removed) (in `ryng_async.checkpoint`)
            └── CheckpointRefusedError  a journal refused before anything was sent (another
                                        load's, a changed input, a foreign file, a newer
                                        format, in use): also a `ConfigurationError`

`ConfigurationError` says "fix the settings": the same call fails the same way until they
change. `ResourceError` says "the environment failed": the same call can succeed once the
resource is back (disk space freed, Redis up, descriptors released), and the command line
exits with its own code (4), not the usage error's 2.

Foreign errors (aiohttp, OSError, asyncio timeouts) never escape raw: they are wrapped
with ``raise ... from exc``. No error message ever contains the access token.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "APIError",
    "AmbiguousError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "RateLimitError",
    "ResourceError",
    "ResourceLimitError",
    "RyngError",
    "ServerError",
    "TransportError",
    "UnreadableResponseError",
    "ValidationError",
]

_BODY_PREVIEW = 200


def fresh_copy(error: RyngError) -> RyngError:
    """A copy of ``error`` to raise, so raising never grows the original's traceback.

    The original lives in a report; a raise would chain the caller's frames onto its
    ``__traceback__`` (and each raise again, deeper), keeping them alive with the report.
    """
    try:
        fresh = copy.copy(error)
    except Exception:
        return error
    fresh.__cause__ = error.__cause__
    fresh.__suppress_context__ = error.__suppress_context__
    return fresh


def preview(value: object, limit: int = 60) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    if len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _rebuilt(cls: type[RyngError], args: tuple[Any, ...], state: dict[str, Any]) -> RyngError:
    error = cls.__new__(cls, *args)  # BaseException.__new__ sets args; no __init__ needed
    error.__dict__.update(state)
    return error


class RyngError(Exception):
    """Root of every error raised by ryng_async.

    Errors pickle with their attributes (a report holding failed batches can come back
    from a worker process).

    Attributes:
        report: the partial `BulkReport` when the error ended a bulk load, else None.
            (Typed ``Any`` so that this module, at the bottom of the package, imports
            nothing above it.)
    """

    report: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls cls(*args), which the keyword-only arguments of
        # the subclasses (status=, errno=) do not survive.
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


class ConfigurationError(RyngError):
    """The client's settings are unusable (missing token, bad subdomain, bad option)."""


class ResourceError(RyngError):
    """A resource of the SDK's own failed while it ran: not the settings, not the server.

    The process's file descriptors or memory (`ResourceLimitError`), the shared rate
    limit's Redis (`ryng_async.redis.RedisLimiterError`), the checkpoint journal's file
    (`ryng_async.checkpoint.CheckpointError`: a disk that fills mid-load). A bulk load
    that meets one stops, its remaining batches ``skipped`` and the partial report on the
    error's ``report``; the same load can succeed once the resource is back. The command
    line exits with 4.
    """


class ResourceLimitError(ResourceError):
    """The process ran out of a local resource (file descriptors, memory) while connecting.

    Not the server's fault and not worth a retry: a bulk load stops at once (its remaining
    batches end ``skipped``) instead of charging every batch a ``ConnectError``.

    Attributes:
        errno: the operating system's error number (``EMFILE``, ``ENFILE`` or ``ENOMEM``).
        limit: the process's file descriptor limit (``ulimit -n``) when it is the one
            reached, else None.
    """

    def __init__(self, message: str, *, errno: int, limit: int | None = None) -> None:
        self.errno = errno
        self.limit = limit
        super().__init__(message)


class ValidationError(RyngError):
    """Input was refused before anything was sent.

    Attributes:
        field: the offending field in wire form (``"number"``, ``"customField3"``...).
        position: the lead's input position in a bulk load or list, when known.
        reason: the rule that failed, without the field or position prefix.
    """

    def __init__(
        self, reason: str, *, field: str | None = None, position: int | None = None
    ) -> None:
        self.reason = reason
        self.field = field
        self.position = position
        where = []
        if position is not None:
            where.append(f"lead #{position}")
        if field is not None:
            where.append(field)
        super().__init__(f"{': '.join(where)}: {reason}" if where else reason)


class APIError(RyngError):
    """The server answered with an error.

    Attributes:
        status: the HTTP status code.
        message: the ``message`` of the vendor's JSON body, or a description.
        body: the response body, decoded as text and cut to a preview.
    """

    def __init__(self, message: str, *, status: int, body: str = "") -> None:
        self.status = status
        self.message = message
        self.body = body[:_BODY_PREVIEW]
        super().__init__(f"HTTP {status}: {message}")


class AuthenticationError(APIError):
    """The access token was refused (HTTP 403, "Unauthorized Token")."""

    def __str__(self) -> str:
        return f"{super().__str__()} (check access_token / RYNG_ACCESS_TOKEN)"


class RateLimitError(APIError):
    """Too many requests (HTTP 429).

    Attributes:
        retry_after: seconds the server asked us to wait, or None if it did not say.
    """

    def __init__(
        self, message: str, *, status: int = 429, body: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class ServerError(APIError):
    """A definite failure: Ryng's own 5xx JSON error, a 503, or 200 with ``"error": true``.

    Attributes:
        retry_after: the ``Retry-After`` of a 503 in seconds, or None.
    """

    def __init__(
        self, message: str, *, status: int, body: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class TransportError(RyngError):
    """No usable answer came back."""


class ConnectError(TransportError):
    """The request surely never reached the server (refused, DNS, reset before sending)."""


class AmbiguousError(TransportError):
    """The request may have been processed, and may not have been.

    A timeout or a drop after it was sent, or an answer that does not prove it was not (a
    proxy's 502 or 504, a 5xx that is not Ryng's JSON: the proxy gave up, Ryng may not have).

    The Append Campaign API has no idempotency key, so resending could append the
    same leads twice; the SDK does not resend unless ``RetryPolicy.retry_ambiguous``.

    Attributes:
        status: the HTTP status of the answer, or None when there was none.
        body: the answer's body, decoded as text and cut to a preview ("" if none).
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body[:_BODY_PREVIEW]
        super().__init__(message)


class UnreadableResponseError(AmbiguousError):
    """A 2xx answer that could not be read: empty, not the vendor's JSON, or too long.

    The server said yes in some form, so the leads may have been appended; like any
    `AmbiguousError`, the request is not resent unless ``RetryPolicy.retry_ambiguous``.

    Attributes:
        status: the HTTP status code (2xx).
        message: what was wrong with the answer.
        body: the response body, decoded as text and cut to a preview.
    """

    status: int

    def __init__(self, message: str, *, status: int, body: str = "") -> None:
        self.message = message
        super().__init__(
            f"HTTP {status}: {message}; the request may have been processed",
            status=status,
            body=body,
        )
