"""Prometheus metrics of every request and load, from the load events (``ryng-async[prometheus]``).

Register one `PrometheusObserver` per registry and give it to the client, so that it sees
every request and load the client makes:

    from prometheus_client import CollectorRegistry
    from ryng_async.metrics import PrometheusObserver

    metrics = PrometheusObserver()  # the default registry; or registry=CollectorRegistry()
    client = RyngClient(observers=[metrics])

(or to one load: ``bulk_append(..., observers=[metrics])``; not both, or that load counts
twice). With the default ``namespace="ryng"``:

=====================================  =========  =============================================
metric                                 type       labels, meaning
=====================================  =========  =============================================
``ryng_leads_total``                   counter    ``outcome``: accepted, failed, unknown,
                                                  skipped (as batches settle), invalid (as
                                                  loads end): the reports' counts
``ryng_batches_total``                 counter    ``outcome``: batches settled
``ryng_loads_total``                   counter    ``result``: ok, not_ok: bulk loads ended
``ryng_retries_total``                 counter    ``reason``: the failed attempt's HTTP status
                                                  (``"503"``) or error class (``ConnectError``)
``ryng_rate_limited_total``            counter    answers 429
``ryng_request_duration_seconds``      histogram  ``status_class``: 2xx, 4xx, 5xx, or none (no
                                                  answer): each attempt, sending to answer
``ryng_requests_in_flight``            gauge      attempts sent and not yet ended
``ryng_rate_limit_per_second``         gauge      the rate a load's limiter holds, after each
                                                  batch; NaN while no limit is in force
=====================================  =========  =============================================

With ``campaign_label=True`` every metric also has a ``campaign`` label (the campaign id:
fine for a few campaigns, not for thousands). No label ever holds a phone number, a lead's
field, a message or the token.
"""

from __future__ import annotations

import math

from . import (
    AttemptEnded,
    AttemptStarting,
    BatchSettled,
    ConfigurationError,
    LoadEnded,
    LoadEvent,
    RetryDetails,
)
from ._attempts import OpenAttempts, error_type

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ryng_async.metrics needs prometheus-client: pip install 'ryng-async[prometheus]'"
    ) from exc

__all__ = ["LATENCY_BUCKETS", "PrometheusObserver"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a request answered in milliseconds up to one that runs into the 30 s timeout."""

_OUTCOMES = ("accepted", "failed", "unknown", "skipped", "invalid")


def _status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


class PrometheusObserver:
    """A load observer exporting Prometheus metrics (see the module's table).

    Args:
        registry: where to register the metrics; prometheus_client's default
            ``REGISTRY`` if None (what ``start_http_server`` and ``make_asgi_app`` serve).
        campaign_label: add a ``campaign`` label (the campaign id) to every metric.
        namespace: the metric names' prefix.

    Raises:
        ConfigurationError: metrics of that namespace are already in the registry (make
            one observer per registry and share it, or give another namespace).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        campaign_label: bool = False,
        namespace: str = "ryng",
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.campaign_label = campaign_label
        self.namespace = namespace
        self._open: OpenAttempts[str] = OpenAttempts()
        base: tuple[str, ...] = ("campaign",) if campaign_label else ()
        made: list[Counter | Gauge | Histogram] = []

        def register(metric: Counter | Gauge | Histogram) -> None:
            made.append(metric)
            self.registry.register(metric)

        try:
            self.leads = Counter(
                "leads",
                "Leads by outcome, as in the bulk reports.",
                (*base, "outcome"),
                namespace=namespace,
                registry=None,
            )
            register(self.leads)
            self.batches = Counter(
                "batches",
                "Bulk batches settled, by outcome.",
                (*base, "outcome"),
                namespace=namespace,
                registry=None,
            )
            register(self.batches)
            self.loads = Counter(
                "loads",
                "Bulk loads ended, by result.",
                (*base, "result"),
                namespace=namespace,
                registry=None,
            )
            register(self.loads)
            self.retries = Counter(
                "retries",
                "Retries scheduled, by the failed attempt's HTTP status or error class.",
                (*base, "reason"),
                namespace=namespace,
                registry=None,
            )
            register(self.retries)
            self.rate_limited = Counter(
                "rate_limited",
                "Answers 429 Too Many Requests.",
                base,
                namespace=namespace,
                registry=None,
            )
            register(self.rate_limited)
            self.request_duration = Histogram(
                "request_duration_seconds",
                "Seconds each request attempt took, by status class (none: no answer).",
                (*base, "status_class"),
                buckets=LATENCY_BUCKETS,
                namespace=namespace,
                registry=None,
            )
            register(self.request_duration)
            self.in_flight = Gauge(
                "requests_in_flight",
                "Request attempts sent and not yet ended.",
                base,
                namespace=namespace,
                registry=None,
            )
            register(self.in_flight)
            self.rate = Gauge(
                "rate_limit_per_second",
                "Requests per second a load's limiter holds (NaN: no limit in force).",
                base,
                namespace=namespace,
                registry=None,
            )
            register(self.rate)
        except ValueError as exc:  # a name already in the registry
            for metric in made[:-1]:
                self.registry.unregister(metric)
            raise ConfigurationError(
                f"metrics named {namespace}_* are already in this registry ({exc}): make one "
                "PrometheusObserver per registry and share it (RyngClient(observers=[...])), "
                "or give another namespace="
            ) from None
        if not campaign_label:
            # Show every series from the start: a dashboard reads 0, not "no data".
            for outcome in _OUTCOMES:
                self.leads.labels(outcome=outcome)
                self.batches.labels(outcome=outcome)
            self.rate.set(math.nan)

    def __repr__(self) -> str:
        return (
            f"PrometheusObserver(namespace={self.namespace!r}, "
            f"campaign_label={self.campaign_label!r})"
        )

    def _base(self, campaign_id: str) -> dict[str, str]:
        return {"campaign": campaign_id} if self.campaign_label else {}

    def __call__(self, event: LoadEvent, /) -> None:
        """Count one load event."""
        if isinstance(event, AttemptStarting):
            for campaign in self._open.start(event.campaign_id):
                self._gauge(campaign).dec()
            self._gauge(event.campaign_id).inc()
        elif isinstance(event, AttemptEnded):
            base = self._base(event.campaign_id)
            if self._open.end() is not None:
                self._gauge(event.campaign_id).dec()
            self.request_duration.labels(**base, status_class=_status_class(event.status)).observe(
                event.elapsed
            )
            if event.status == 429:
                (self.rate_limited.labels(**base) if base else self.rate_limited).inc()
        elif isinstance(event, RetryDetails):
            self.retries.labels(
                **self._base(event.campaign_id), reason=error_type(event.error)
            ).inc()
        elif isinstance(event, BatchSettled):
            base = self._base(event.campaign_id)
            result = event.result
            outcome = result.outcome.value
            accepted = result.accepted_count  # all, or the parts accepted after a 413
            never_sent = result.skipped_count  # parts a stop left unsent, after a 413
            if accepted:
                self.leads.labels(**base, outcome="accepted").inc(accepted)
            if never_sent:
                self.leads.labels(**base, outcome="skipped").inc(never_sent)
            if result.count > accepted + never_sent:
                self.leads.labels(**base, outcome=outcome).inc(result.count - accepted - never_sent)
            self.batches.labels(**base, outcome=outcome).inc()
            rate = event.progress.rate
            (self.rate.labels(**base) if base else self.rate).set(
                math.nan if rate is None else rate
            )
        elif isinstance(event, LoadEnded):
            report = event.report
            base = self._base(report.campaign_id)
            if report.invalid:
                self.leads.labels(**base, outcome="invalid").inc(report.invalid)
            self.loads.labels(**base, result="ok" if report.ok else "not_ok").inc()
            # The attempts of a load's tasks are over once it has ended.
            for campaign in self._open.sweep():
                self._gauge(campaign).dec()

    def _gauge(self, campaign_id: str) -> Gauge:
        return (
            self.in_flight.labels(campaign=campaign_id) if self.campaign_label else self.in_flight
        )
