"""`RyngClient`: settings, lifecycle and the public calls (a thin facade over `Sender`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable, Sequence
from types import TracebackType
from typing import Self, Unpack
from urllib.parse import quote

import aiohttp
from yarl import URL

from ._batching import BodyTemplate
from ._bulk import BatchStream, BulkOptions, run_bulk, start_stream
from ._clock import Clock, EventLoopClock
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    RetryPolicy,
)
from ._events import (
    ExtensionError,
    LoadObserver,
    LoggingObserver,
    Observers,
    RetryHook,
    check_observers,
    on_retry_observer,
)
from ._exceptions import ConfigurationError
from ._exchange import Exchange
from ._lead_checks import agents_field, validate_lead, validate_leads
from ._models import AppendResponse, CampaignOptions, LeadInput
from ._ratelimit import AdaptiveLimiter, Limiter
from ._report import BulkReport
from ._sender import Sender
from ._sheet import SheetForm, SheetInput
from ._validate import (
    CAMPAIGN_OPTION_NAMES,
    build_request,
    check_campaign_id,
    check_keepalive,
    check_keywords,
    check_limiter,
    check_positive,
    check_rate,
    check_token,
    resolve_base_url,
)

__all__ = ["RyngClient"]

_API_PATH = "/rest-api/v1/campaign/"


def _env(value: str | None, name: str) -> str | None:
    if value is not None:
        return value
    return os.environ.get(name) or None


class RyngClient:
    """An async client for Ryng's Append Campaign API, owning one connection pool.

    Use it as an async context manager, or call `aclose` when done:

        async with RyngClient(subdomain="acme", access_token="...") as client:
            await client.append("42", [{"number": "+919876543210"}])

    Args:
        subdomain: the account's subdomain (one DNS label); defaults to ``RYNG_SUBDOMAIN``.
        access_token: the ``x-access-token``; defaults to ``RYNG_ACCESS_TOKEN``.
        base_url: replaces ``https://{subdomain}.ryng.in`` (proxies, tests, the fake
            server); defaults to ``RYNG_BASE_URL``. Plain ``http://`` is refused unless
            the host is loopback or ``allow_insecure_http`` is true.
        allow_insecure_http: accept a plain ``http://`` base URL to a host that is not
            loopback (the token then travels unencrypted: only on a trusted path).
        timeout: seconds allowed for one attempt, connecting and reading included.
        connect_timeout: seconds allowed to open a connection, or None.
        rate_limit: the most requests per second this client sends, or None.
        limiter: any `Limiter` to pace every request instead (not with ``rate_limit``).
        retry: when to try again; `RetryPolicy` defaults if None.
        session: an `aiohttp.ClientSession` to use instead of an owned one; the client
            never closes it.
        max_connections: size of the owned connection pool.
        keepalive_timeout: seconds an owned pool's connection may idle before it is
            closed instead of reused (0: never reused); a server's shorter
            ``Keep-Alive: timeout=N`` is honoured too, less a second.
        max_response_bytes: the longest response body read; longer is an `APIError`.
        on_retry: called with a `RetryDetails` before every retry.
        observers: callables given every request's load events (`AttemptStarting`,
            `AttemptEnded`, `RetryDetails`), for metrics and traces.
        random_seed: seeds the backoff jitter, for reproducible runs.
        clock: the clock of retry waits, pauses and report timings (tests pass a
            `ryng_async.testing.ManualClock`); the event loop's by default.

    Raises:
        ConfigurationError: a missing or malformed setting, before any I/O.
    """

    def __init__(
        self,
        subdomain: str | None = None,
        access_token: str | None = None,
        *,
        base_url: str | None = None,
        allow_insecure_http: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        rate_limit: float | None = None,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        on_retry: RetryHook | None = None,
        observers: Sequence[LoadObserver] = (),
        random_seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        token = check_token(_env(access_token, "RYNG_ACCESS_TOKEN"))
        if base_url is None and subdomain is None:
            base_url = os.environ.get("RYNG_BASE_URL") or None
            subdomain = None if base_url else (os.environ.get("RYNG_SUBDOMAIN") or None)
        if not isinstance(allow_insecure_http, bool):
            raise ConfigurationError(
                f"allow_insecure_http must be True or False, got {allow_insecure_http!r}"
            )
        self._base_url = resolve_base_url(
            subdomain, base_url, allow_insecure_http=allow_insecure_http
        )
        check_positive(timeout, "timeout")
        check_positive(connect_timeout, "connect_timeout", allow_none=True)
        check_positive(max_connections, "max_connections")
        check_positive(max_response_bytes, "max_response_bytes")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
        clock = clock or EventLoopClock()
        client_observers = Observers([LoggingObserver()])
        if on_retry is not None:
            client_observers += Observers([on_retry_observer(on_retry)])
        client_observers += check_observers(observers)
        self._sender = Sender(
            token=token,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout),
            retry=retry or RetryPolicy(),
            limiter=check_limiter(limiter, rate_limit)
            or AdaptiveLimiter(check_rate(rate_limit), clock=clock),
            clock=clock,
            observers=client_observers,
            session=session,
            max_connections=int(max_connections),
            max_response_bytes=int(max_response_bytes),
            random_seed=random_seed,
            keepalive_timeout=check_keepalive(keepalive_timeout),
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RyngClient base_url={self._base_url!r} {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """True once `aclose` was called."""
        return self._sender.closed

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every request this client sends."""
        return self._sender.retry

    @property
    def limiter(self) -> Limiter:
        """The limiter every request of this client awaits (unless a load brings its own)."""
        return self._sender.limiter

    def campaign_url(self, campaign_id: str | int) -> str:
        """Return the append URL of a campaign, its id percent-encoded."""
        return self._base_url + _API_PATH + quote(check_campaign_id(campaign_id), safe="")

    async def __aenter__(self) -> Self:
        self._sender.session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the owned connection pool; the client then refuses new requests."""
        await self._sender.aclose()

    # -- public calls ----------------------------------------------------------------

    async def append(
        self,
        campaign_id: str | int,
        leads: Iterable[LeadInput],
        **options: Unpack[CampaignOptions],
    ) -> AppendResponse:
        """Append leads to a campaign in one JSON request.

        Args:
            campaign_id: the campaign's id (percent-encoded into the URL).
            leads: `Lead` s or wire-form mappings (``{"number": ..., "customField1": ...}``).
            **options: the campaign options (`CampaignOptions`): ``name``,
                ``agent_mapping`` (``"global"``, ``"inline"`` or ``"all-agents"``),
                ``agents`` (required, non-empty, with ``"global"``),
                ``custom_field_names`` (``{"customField1Name": "Name", ...}``),
                ``terminal_callback_url`` and ``connect_callback_url``.

        Returns:
            The API's answer (``error`` is False).

        Raises:
            ValidationError: a bad lead or option; nothing was sent.
            AuthenticationError: the token was refused (403).
            RateLimitError: still 429 after the retries allowed.
            ServerError: Ryng's own 5xx JSON error or a 503, after the retries allowed,
                or ``"error": true``.
            APIError: any other error answer (a 413, a redirect: never followed).
            ConnectError: the server could not be reached (the request surely never
                reached it).
            AmbiguousError: no usable answer after sending (a timeout, a drop, a proxy's
                502 or 504 or another 5xx that is not Ryng's JSON: ``.status``, ``.body``,
                or an `UnreadableResponseError`: a 2xx answer that could not be read); the
                leads may have been appended.
            ResourceLimitError: the process ran out of file descriptors or memory.
            Exception: what an ``on_retry`` hook, an observer or the limiter raised.
        """
        check_keywords(options, CAMPAIGN_OPTION_NAMES, "append")
        url = URL(self.campaign_url(campaign_id), encoded=True)
        template = BodyTemplate(build_request(**options))
        rows = validate_leads(leads)
        try:
            body = template.body(rows)
        except UnicodeEncodeError:
            # The batched check does not look for lone surrogates; the lead-by-lead one
            # names the lead and field that holds one.
            for position, row in enumerate(rows):
                validate_lead(row, position)
            raise
        return await self._send(Exchange(campaign_id=str(campaign_id)), url, lambda: body)

    async def upload_sheet(
        self,
        campaign_id: str | int,
        sheet: SheetInput,
        *,
        agents: Sequence[str] | str | None = None,
    ) -> AppendResponse:
        """Append the leads of a CSV sheet, sent as multipart/form-data.

        Args:
            campaign_id: the campaign's id.
            sheet: a path (streamed from disk, reopened for each attempt), the CSV's bytes,
                or a binary file object (retried only if it is seekable).
            agents: agent usernames, sent comma-joined, or ``"in-file"`` when the sheet
                maps agents itself.

        Returns and raises as `append`.
        """
        url = URL(self.campaign_url(campaign_id), encoded=True)
        form = SheetForm(sheet, agents_field(agents))
        try:
            return await self._send(
                Exchange(campaign_id=str(campaign_id)),
                url,
                form,
                json=False,
                max_attempts=None if form.retryable else 1,
            )
        finally:
            form.close()

    async def _send(
        self,
        exchange: Exchange,
        url: URL,
        make_data: object,
        *,
        json: bool = True,
        max_attempts: int | None = None,
    ) -> AppendResponse:
        """Send one request; an observer's or limiter's exception is raised as itself."""
        try:
            return await self._sender.send(
                exchange,
                url,
                make_data,  # type: ignore[arg-type]
                json=json,
                max_attempts=max_attempts,
            )
        except ExtensionError as failure:
            raise failure.cause from failure.request_error

    def stream_append(
        self,
        campaign_id: str | int,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        **options: Unpack[BulkOptions],
    ) -> BatchStream:
        """Bulk-load leads, yielding each `BatchResult` as its batch ends.

        Takes the arguments of `bulk_append`. Use it as
        ``async with client.stream_append(...) as results: async for result in results``
        so that leaving the block early stops the load and waits for it to settle. A
        bare ``async for`` that breaks early is stopped when the stream is collected, or
        by `aclose` on the client; either way nothing new is sent and the report settles.
        ``results.stop()`` stops the load gently while the loop goes on: the requests in
        flight end (within ``stop_grace``) and their results still come.
        ``results.report`` is the live `BulkReport`.
        """
        return start_stream(
            self._sender, self.campaign_url(campaign_id), campaign_id, leads, options
        )

    async def bulk_append(
        self,
        campaign_id: str | int,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        **options: Unpack[BulkOptions],
    ) -> BulkReport:
        """Bulk-load leads in concurrent, rate-limited batches; return the `BulkReport`.

        Args:
            campaign_id: the campaign's id.
            leads: an iterable or async iterable of `Lead` s or wire-form mappings, read
                lazily, a batch at a time (yield a new mapping per row); or a pandas or
                polars ``DataFrame`` or a pyarrow ``Table``, ``RecordBatch`` or
                ``RecordBatchReader``, read as `leads_from_frame` reads it (its headers
                become the custom field names unless ``custom_field_names`` is given).
            **options: see `BulkOptions`: ``batch_size``, ``max_batch_bytes``,
                ``concurrency``, ``rate_limit``, ``limiter``, ``observers``,
                ``on_progress``, ``report``, ``dedupe``, ``max_consecutive_failures``,
                ``stop`` (an event to set for a gentle stop) and ``stop_grace``, and the
                campaign options of `append`.

        Returns:
            The final `BulkReport`: every lead read is accepted, failed, unknown, skipped
            or invalid; also after a gentle stop (``stop`` set), where ``stopped_early``
            says whether some of the input was left unread or unsent.

        Raises:
            ValidationError: a bad campaign option (before anything is read).
            ConfigurationError: a bad bulk setting, or a closed client.
            AuthenticationError: a 403 stopped the load; ``.report`` is the partial report.
            Exception: whatever the input iterator, a hook, an observer or the limiter
                raised, re-raised as is once the load has settled (pass ``report=`` to
                keep the partial report).
        """
        if _is_frame(leads):
            from .dataframes import leads_from_frame

            rows, names = leads_from_frame(leads)
            if names is not None and options.get("custom_field_names") is None:
                options["custom_field_names"] = names
            leads = rows
        return await run_bulk(
            self._sender, self.campaign_url(campaign_id), campaign_id, leads, options
        )


_FRAMES = {
    ("pandas", "DataFrame"),
    ("polars", "DataFrame"),
    ("polars", "LazyFrame"),
    ("pyarrow", "Table"),
    ("pyarrow", "RecordBatch"),
    ("pyarrow", "RecordBatchReader"),
}


def _is_frame(leads: object) -> bool:
    """A DataFrame or Arrow table (iterating one yields columns, not rows)."""
    kind = type(leads)
    return (kind.__module__.partition(".")[0], kind.__name__) in _FRAMES
