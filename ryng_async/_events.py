"""Load events and their observers: what happened to each batch and request, as it happens.

An observer is any callable taking one event record (frozen, slotted: easy to type, easy to
extend without breaking observers), in the spirit of stamina's instrumentation hooks. It
may return an awaitable: the SDK awaits it before going on. That is how a checkpoint
journal makes `AttemptStarting` wait until its record is durable: the request is written
only after every observer of that event has returned (and its awaitable completed).

An observer that raises stops what it observes: in a bulk load, nothing new is sent, the
load settles, and that exception is raised once it has (`ExtensionError` carries it through
the SDK, never mixed up with a request's own error).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ._exceptions import ConfigurationError, RyngError
from ._models import AppendResponse
from ._report import BatchResult, BulkReport, Progress
from ._retry import RetryDetails
from ._validate import check_hook

__all__ = [
    "AttemptEnded",
    "AttemptStarting",
    "BatchPacked",
    "BatchSettled",
    "ExtensionError",
    "LoadEnded",
    "LoadEvent",
    "LoadObserver",
    "LoggingObserver",
    "Observers",
    "ProgressHook",
    "RetryHook",
    "check_observers",
    "on_progress_observer",
    "on_retry_observer",
]

logger = logging.getLogger("ryng_async")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPacked:
    """A bulk batch was cut from the input and is about to be queued for sending.

    Attributes:
        campaign_id: the campaign loaded into.
        index: the batch's number in the load, from 0, in input order.
        start: input position of its first lead.
        count: leads in it.
        size: bytes of its request body.
        ranges: its leads' input positions as ``(start, count)`` runs, in input order (a
            batch skips the positions of invalid and deduplicated leads), as in its
            `BatchResult`.
    """

    campaign_id: str
    index: int
    start: int
    count: int
    size: int
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarting:
    """A request is about to be written (awaited observers hold it until they return).

    Attributes:
        campaign_id: the campaign sent to.
        batch_index: the bulk batch, or None for a single call.
        attempt: 1 for the first attempt.
    """

    campaign_id: str
    batch_index: int | None
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptEnded:
    """A request attempt ended with an answer or an error.

    Attributes:
        campaign_id: the campaign sent to.
        batch_index: the bulk batch, or None for a single call.
        attempt: 1 for the first attempt.
        status: the HTTP status answered, or None (no answer).
        error: the attempt's error, None if it was accepted.
        maybe_processed: the attempt may have appended its leads although it failed
            (a timeout or a drop after sending), or it succeeded.
        elapsed: seconds the attempt took.
    """

    campaign_id: str
    batch_index: int | None
    attempt: int
    status: int | None
    error: RyngError | None
    maybe_processed: bool
    elapsed: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettled:
    """A bulk batch ended in its one outcome.

    Attributes:
        campaign_id: the campaign loaded into.
        result: its `BatchResult`.
        progress: the load's counts just after it.
    """

    campaign_id: str
    result: BatchResult
    progress: Progress


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadEnded:
    """A bulk load ended (normally or not); its report is final.

    Attributes:
        report: the load's final `BulkReport`.
    """

    report: BulkReport


LoadEvent = BatchPacked | AttemptStarting | AttemptEnded | RetryDetails | BatchSettled | LoadEnded
"""Every event an observer may be given; `RetryDetails` is the "retry scheduled" event."""

# What an observer takes unless it says otherwise (the SDK's own say with ``_kinds_heard``).
_EVERY_KIND: frozenset[type] = frozenset(
    {BatchPacked, AttemptStarting, AttemptEnded, RetryDetails, BatchSettled, LoadEnded}
)


class LoadObserver(Protocol):
    """Sees every load event; may return an awaitable the SDK awaits before going on."""

    def __call__(self, event: LoadEvent, /) -> Awaitable[None] | None:
        """Observe one event."""
        ...


ProgressHook = Callable[[Progress], object]
"""Called with a `Progress` snapshot after every batch."""
RetryHook = Callable[[RetryDetails], object]
"""Called with a `RetryDetails` before each retry (for logs and metrics)."""


class ExtensionError(Exception):
    """An observer or the limiter raised; carries what it raised and the request's state.

    Internal: the bulk engine and the client unwrap it, so callers see the observer's or
    limiter's exception itself, and a batch keeps its own error (or its acceptance).

    Attributes:
        cause: what the observer or limiter raised.
        request_error: the error of the attempt being observed (a retry), else None.
        response: the accepted answer, when the request had succeeded, else None.
    """

    def __init__(self, cause: Exception, request_error: RyngError | None = None) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.request_error = request_error
        self.response: AppendResponse | None = None


class Observers:
    """An ordered set of observers, called one after the other for each event.

    `hears` says whether any observer takes events of a kind: where none does (the
    default logging observer takes only retries and ends), the load does not build them.
    """

    __slots__ = ("_heard", "_observers")

    def __init__(self, observers: Iterable[LoadObserver] = ()) -> None:
        self._observers: tuple[LoadObserver, ...] = tuple(observers)
        heard: set[type] = set()
        for observer in self._observers:
            heard.update(getattr(observer, "_kinds_heard", _EVERY_KIND))
        self._heard = frozenset(heard)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __iter__(self) -> Iterator[LoadObserver]:
        return iter(self._observers)

    def __add__(self, other: Observers) -> Observers:
        return Observers((*self._observers, *other))

    def hears(self, kind: type) -> bool:
        """Say whether an observer takes events of ``kind`` (one of the `LoadEvent` types)."""
        return kind in self._heard

    async def emit(self, event: LoadEvent, request_error: RyngError | None = None) -> None:
        """Give ``event`` to every observer, awaiting what they return.

        Raises:
            ExtensionError: an observer raised (the rest are not called).
        """
        for observer in self._observers:
            try:
                result = observer(event)
                if result is not None:
                    await result
            except Exception as exc:
                raise ExtensionError(exc, request_error) from exc

    def emit_nowait(self, event: LoadEvent) -> Exception | None:
        """Give ``event`` to every observer without awaiting; return what one raised.

        For synchronous paths (a load settling under cancellation). An awaitable an
        observer returns is closed unawaited if it is a coroutine.
        """
        for observer in self._observers:
            try:
                result = observer(event)
            except Exception as exc:
                return exc
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return None


def check_observers(observers: object, name: str = "observers") -> Observers:
    """Return ``observers`` (a sequence of callables) as `Observers`; refuse anything else."""
    if isinstance(observers, Observers):
        return observers
    if not isinstance(observers, Sequence) or isinstance(observers, str | bytes):
        raise ConfigurationError(f"{name} must be a sequence of observers, got {observers!r}")
    for observer in observers:
        if not callable(observer):
            raise ConfigurationError(f"{name}: {observer!r} is not callable")
    return Observers(observers)


def on_retry_observer(hook: RetryHook) -> LoadObserver:
    """Adapt a plain ``on_retry`` callable to an observer of `RetryDetails` events."""
    check_hook(hook, "on_retry")
    return _HookObserver(RetryDetails, hook, lambda event: event)


def on_progress_observer(hook: ProgressHook) -> LoadObserver:
    """Adapt a plain ``on_progress`` callable to an observer of `BatchSettled` events."""
    check_hook(hook, "on_progress")
    return _HookObserver(BatchSettled, hook, lambda event: event.progress)


class _HookObserver:
    """Calls a hook with what one kind of event carries; takes no other kind."""

    __slots__ = ("_hook", "_kind", "_kinds_heard", "_pick")

    def __init__(
        self, kind: type, hook: Callable[[Any], object], pick: Callable[[Any], Any]
    ) -> None:
        self._kind = kind
        self._kinds_heard = frozenset({kind})
        self._hook = hook
        self._pick = pick

    def __call__(self, event: LoadEvent, /) -> None:
        if isinstance(event, self._kind):
            self._hook(self._pick(event))


class LoggingObserver:
    """Logs load events through the ``ryng_async`` logger: retries at INFO, ends at INFO.

    Counts and batch positions only, never lead contents or the token.
    """

    __slots__ = ()
    _kinds_heard: ClassVar[frozenset[type]] = frozenset({RetryDetails, LoadEnded})

    def __call__(self, event: LoadEvent, /) -> None:
        """Log ``event`` if it is worth a line."""
        if isinstance(event, RetryDetails):
            logger.info(
                "campaign %s%s: attempt %d failed (%s); retrying in %.2fs",
                event.campaign_id,
                "" if event.batch_index is None else f" batch {event.batch_index}",
                event.attempt,
                event.reason,
                event.delay,
            )
        elif isinstance(event, LoadEnded):
            report = event.report
            logger.info("bulk load of campaign %s ended: %s", report.campaign_id, report)

    def __repr__(self) -> str:
        return "LoggingObserver()"
