"""OpenTelemetry spans of loads and requests, from the load events (``ryng-async[otel]``).

Uses opentelemetry-api only: spans go to the tracer provider your application configured
(``opentelemetry-sdk`` and an exporter); with none configured they cost next to nothing.
The SDK never configures one:

    from ryng_async.tracing import OpenTelemetryObserver

    tracing = OpenTelemetryObserver(base_url=client.base_url)
    report = await client.bulk_append("42", rows, observers=[tracing])

Spans:

- ``ryng bulk load`` (internal), from a load's first event to its end, a child of the span
  current where the load was started. Attributes: ``ryng.campaign.id``, the report's
  counts (``ryng.leads.total``, ``.accepted``, ``.failed``, ``.unknown``, ``.skipped``,
  ``.invalid``), ``ryng.batches``, ``ryng.outcome`` (``ok`` or ``not_ok``),
  ``ryng.stopped_early``; a load that is not ok has status ERROR and an ``error.type``
  (the class of the error ``report.raise_for_failures()`` raises). A ``ryng.retry`` event
  for each retry scheduled.
- ``POST`` (client), one per request attempt, a child of its load's span (or, for a single
  ``append``, of the span current where it was called), following OpenTelemetry's HTTP
  client conventions: ``http.request.method``, ``server.address``, ``server.port``,
  ``url.template``, ``http.response.status_code``, ``http.request.resend_count`` (from the
  second attempt: the attempts before it), ``error.type`` (the HTTP status, or the error's
  class) with status ERROR on failure; and ``ryng.campaign.id``, ``ryng.attempt`` (from
  1), ``ryng.batch.index``, ``ryng.batch.start``, ``ryng.batch.count``, ``ryng.outcome``
  (``accepted``; ``failed``: refused, surely not appended; ``unknown``: may have been
  appended; ``abandoned``: cut off by a cancel).

No attribute or event holds the token, a lead's contents or a message (a server's message
may quote a lead).

**One observer, which loads.** Events name a campaign, not a load: an observer tells
loads apart by campaign id. Give each load its own observer (``observers=[...]`` of
``bulk_append``) and its spans are exact whatever runs beside it. An observer given to
`RyngClient` traces every request (and every single ``append``) and every load too, as
long as two loads into the *same* campaign do not run at the same time on that client (they
would share one load span). Give it to one or the other, not both, or each attempt is
traced twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import (
    AttemptEnded,
    AttemptStarting,
    BatchPacked,
    BatchSettled,
    BulkReport,
    LoadEnded,
    LoadEvent,
    RetryDetails,
    RyngError,
    __version__,
)
from ._attempts import OpenAttempts, error_type

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ryng_async.tracing needs opentelemetry-api: pip install 'ryng-async[otel]'"
    ) from exc

__all__ = ["OpenTelemetryObserver"]

_URL_TEMPLATE = "/rest-api/v1/campaign/{campaignId}"
_LOAD_SPAN = "ryng bulk load"


@dataclass(slots=True)
class _Load:
    span: trace.Span
    context: otel_context.Context
    batches: dict[int, tuple[int, int]] = field(default_factory=dict)  # index: (start, count)


class OpenTelemetryObserver:
    """A load observer making OpenTelemetry spans (see the module's docstring).

    Args:
        tracer_provider: the provider to take a tracer from; the global one (set by
            your application) if None.
        base_url: the client's base URL (``client.base_url``), for ``server.address``
            and ``server.port``; left out if None. Settable later, for an observer
            given to the client it describes.
    """

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, base_url: str | None = None
    ) -> None:
        self._tracer = trace.get_tracer("ryng_async", __version__, tracer_provider)
        self._server: dict[str, Any] = {}
        self.base_url = base_url
        self._loads: dict[str, _Load] = {}
        self._attempts: OpenAttempts[trace.Span] = OpenAttempts()

    @property
    def base_url(self) -> str | None:
        """The base URL the requests go to (settable: ``observer.base_url = client.base_url``)."""
        return self._base_url

    @base_url.setter
    def base_url(self, base_url: str | None) -> None:
        self._base_url = base_url
        server: dict[str, Any] = {}
        parts = urlsplit(base_url or "")
        if parts.hostname:
            server["server.address"] = parts.hostname
            server["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        self._server = server

    def __repr__(self) -> str:
        server = self._server.get("server.address")
        return f"OpenTelemetryObserver(server={server!r}, loads_open={len(self._loads)})"

    def __call__(self, event: LoadEvent, /) -> None:
        """Start or end the spans ``event`` marks."""
        if isinstance(event, AttemptStarting):
            self._attempt_starting(event)
        elif isinstance(event, AttemptEnded):
            self._attempt_ended(event)
        elif isinstance(event, BatchPacked):
            self._load(event.campaign_id).batches[event.index] = (event.start, event.count)
        elif isinstance(event, BatchSettled):
            load = self._load(event.campaign_id)
            load.batches.pop(event.result.index, None)
        elif isinstance(event, RetryDetails):
            self._retry(event)
        elif isinstance(event, LoadEnded):
            self._load_ended(event.report)

    # -- loads ---------------------------------------------------------------------------

    def _load(self, campaign_id: str) -> _Load:
        load = self._loads.get(campaign_id)
        if load is None:
            span = self._tracer.start_span(
                _LOAD_SPAN,
                kind=trace.SpanKind.INTERNAL,
                attributes={"ryng.campaign.id": campaign_id},
            )
            load = _Load(span, trace.set_span_in_context(span))
            self._loads[campaign_id] = load
        return load

    def _load_ended(self, report: BulkReport) -> None:
        load = self._loads.pop(report.campaign_id, None) or self._load_now(report.campaign_id)
        span = load.span
        span.set_attributes(
            {
                "ryng.leads.total": report.total,
                "ryng.leads.accepted": report.accepted,
                "ryng.leads.failed": report.failed,
                "ryng.leads.unknown": report.unknown,
                "ryng.leads.skipped": report.skipped,
                "ryng.leads.invalid": report.invalid,
                "ryng.batches": len(report.batches),
                "ryng.outcome": "ok" if report.ok else "not_ok",
                "ryng.stopped_early": report.stopped_early,
            }
        )
        if not report.ok:
            span.set_attribute("error.type", _failure_type(report))
            span.set_status(
                trace.Status(
                    trace.StatusCode.ERROR,
                    f"{report.total - report.accepted} of {report.total} leads not accepted",
                )
            )
        span.end()
        # The attempts of the load's tasks are over once it has ended.
        for attempt in self._attempts.sweep():
            _abandon(attempt)

    def _load_now(self, campaign_id: str) -> _Load:
        load = self._load(campaign_id)  # a load that ended before any other event
        del self._loads[campaign_id]
        return load

    def _retry(self, event: RetryDetails) -> None:
        attributes: dict[str, Any] = {
            "ryng.attempt": event.attempt,
            "ryng.retry.delay": event.delay,
            "error.type": error_type(event.error),
        }
        if event.batch_index is not None:
            attributes["ryng.batch.index"] = event.batch_index
            self._load(event.campaign_id).span.add_event("ryng.retry", attributes)
        else:
            trace.get_current_span().add_event("ryng.retry", attributes)

    # -- attempts ------------------------------------------------------------------------

    def _attempt_starting(self, event: AttemptStarting) -> None:
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "url.template": _URL_TEMPLATE,
            **self._server,
            "ryng.campaign.id": event.campaign_id,
            "ryng.attempt": event.attempt,
        }
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        parent = None
        if event.batch_index is not None:
            load = self._load(event.campaign_id)
            parent = load.context
            attributes["ryng.batch.index"] = event.batch_index
            position = load.batches.get(event.batch_index)
            if position is not None:
                attributes["ryng.batch.start"], attributes["ryng.batch.count"] = position
        span = self._tracer.start_span(
            "POST", context=parent, kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        for stale in self._attempts.start(span):
            _abandon(stale)

    def _attempt_ended(self, event: AttemptEnded) -> None:
        span = self._attempts.end()
        if span is None:
            return
        if event.status is not None:
            span.set_attribute("http.response.status_code", event.status)
        if event.error is None:
            span.set_attribute("ryng.outcome", "accepted")
        else:
            span.set_attribute("ryng.outcome", "unknown" if event.maybe_processed else "failed")
            span.set_attribute("error.type", error_type(event.error))
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end()


def _abandon(span: trace.Span) -> None:
    span.set_attribute("ryng.outcome", "abandoned")
    span.set_attribute("error.type", "cancelled")
    span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()


def _failure_type(report: BulkReport) -> str:
    """The class of the error ``raise_for_failures`` raises for this report."""
    try:
        report.raise_for_failures()
    except RyngError as error:
        return type(error).__name__
    return "RyngError"  # pragma: no cover - only called for a report that is not ok
