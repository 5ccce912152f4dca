"""`RyngClient`: settings, the connection pool, and one request with its retries."""

from __future__ import annotations

import io
import logging
import os
import random
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import quote

import aiohttp
import anyio
import msgspec
from yarl import URL

from ._batching import BodyTemplate
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    RetryPolicy,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._bulk import BatchStream, BulkOptions
    from ._report import BulkReport

from ._exceptions import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    RyngError,
    ServerError,
    ValidationError,
    preview,
)
from ._exchange import Exchange, SendStoppedError, StopSignal, check_hook
from ._models import AgentMapping, AppendResponse, Lead, decode_response
from ._ratelimit import RatePacer, check_rate
from ._retry import RetryBudget, RetryDetails, is_retryable, parse_retry_after, retry_delay
from ._validate import build_request, validate_leads

__all__ = ["LeadInput", "RetryHook", "RyngClient", "SheetInput"]

logger = logging.getLogger("ryng_async")

_SUBDOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")
_API_PATH = "/rest-api/v1/campaign/"
_USER_AGENT = "ryng-async"
_SHEET_CHUNK = 64 * 1024

LeadInput = Lead | Mapping[str, Any]
"""A lead as the SDK takes it: a `Lead` or a wire-form mapping."""
RetryHook = Callable[[RetryDetails], object]
"""Called with a `RetryDetails` before each retry (for logs and metrics)."""
SheetInput = str | os.PathLike[str] | bytes | IO[bytes]
"""A CSV sheet: a file path, its bytes, or a binary file object."""


def _env(value: str | None, name: str) -> str | None:
    if value is not None:
        return value
    return os.environ.get(name) or None


def _check_campaign_id(campaign_id: object) -> str:
    if isinstance(campaign_id, int) and not isinstance(campaign_id, bool):
        campaign_id = str(campaign_id)
    if not isinstance(campaign_id, str) or not campaign_id:
        raise ValidationError(
            f"must be a non-empty string, got {preview(campaign_id)}", field="campaign_id"
        )
    if campaign_id in {".", ".."}:
        raise ValidationError(f"{campaign_id!r} is not a usable path segment", field="campaign_id")
    return campaign_id


def _check_positive(value: object, name: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")


class RyngClient:
    """An async client for Ryng's Append Campaign API, owning one connection pool.

    Use it as an async context manager, or call `aclose` when done::

        async with RyngClient(subdomain="acme", access_token="...") as client:
            await client.append("42", [{"number": "+919876543210"}])

    Args:
        subdomain: the account's subdomain (one DNS label); defaults to ``RYNG_SUBDOMAIN``.
        access_token: the ``x-access-token``; defaults to ``RYNG_ACCESS_TOKEN``.
        base_url: replaces ``https://{subdomain}.ryng.in`` (proxies, tests, the fake
            server); defaults to ``RYNG_BASE_URL``.
        timeout: seconds allowed for one attempt, connecting and reading included.
        connect_timeout: seconds allowed to open a connection, or None.
        rate_limit: the most requests per second this client sends, or None.
        retry: when to try again; `RetryPolicy` defaults if None.
        session: an `aiohttp.ClientSession` to use instead of an owned one; the client
            never closes it.
        max_connections: size of the owned connection pool.
        max_response_bytes: the longest response body read; longer is an `APIError`.
        on_retry: called with a `RetryDetails` before every retry.
        random_seed: seeds the backoff jitter, for reproducible runs.

    Raises:
        ConfigurationError: a missing or malformed setting, before any I/O.
    """

    def __init__(
        self,
        subdomain: str | None = None,
        access_token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        rate_limit: float | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        on_retry: RetryHook | None = None,
        random_seed: int | None = None,
    ) -> None:
        token = _env(access_token, "RYNG_ACCESS_TOKEN")
        if token is None:
            raise ConfigurationError("no access token: pass access_token= or set RYNG_ACCESS_TOKEN")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ConfigurationError(
                "access_token must be visible ASCII characters only "
                "(no spaces, CR/LF or control characters)"
            )
        if base_url is None and subdomain is None:
            base_url = os.environ.get("RYNG_BASE_URL") or None
            subdomain = None if base_url else (os.environ.get("RYNG_SUBDOMAIN") or None)
        self._base_url = self._resolve_base_url(subdomain, base_url)
        _check_positive(timeout, "timeout")
        _check_positive(connect_timeout, "connect_timeout", allow_none=True)
        _check_positive(max_connections, "max_connections")
        _check_positive(max_response_bytes, "max_response_bytes")
        check_hook(on_retry, "on_retry")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
        self._headers = {"x-access-token": token, "User-Agent": _USER_AGENT}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._pacer = RatePacer(check_rate(rate_limit))
        self.retry = retry or RetryPolicy()
        self._budget = RetryBudget.for_policy(self.retry)
        self._on_retry = on_retry
        self._rng = random.Random(random_seed)
        self._max_connections = int(max_connections)
        self._max_response_bytes = int(max_response_bytes)
        self._session = session
        self._owns_session = session is None
        self._closed = False

    @staticmethod
    def _resolve_base_url(subdomain: str | None, base_url: str | None) -> str:
        if base_url is not None:
            try:
                url = URL(base_url)
                usable = bool(url.scheme in {"http", "https"} and url.host and url.port)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"base_url is not a usable URL: {base_url!r}") from exc
            if not usable or url.query or url.fragment:
                raise ConfigurationError(
                    f"base_url must be an absolute http(s) URL without query, got {base_url!r}"
                )
            return str(url).rstrip("/")
        if subdomain is None:
            raise ConfigurationError(
                "no subdomain: pass subdomain= (or base_url=), or set RYNG_SUBDOMAIN"
            )
        if not isinstance(subdomain, str) or not _SUBDOMAIN.fullmatch(subdomain):
            raise ConfigurationError(
                f"subdomain must be one DNS label (letters, digits, '-'), got {subdomain!r}"
            )
        return f"https://{subdomain.lower()}.ryng.in"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RyngClient base_url={self._base_url!r} {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """True once `aclose` was called."""
        return self._closed

    def campaign_url(self, campaign_id: str | int) -> str:
        """Return the append URL of a campaign, its id percent-encoded."""
        return self._base_url + _API_PATH + quote(_check_campaign_id(campaign_id), safe="")

    async def __aenter__(self) -> Self:
        self._get_session()
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
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ConfigurationError("this RyngClient is closed; create a new one")
        if self._session is not None and self._session.closed:
            raise ConfigurationError(
                "the aiohttp session passed as session= is closed"
                if not self._owns_session
                else "the client's connection pool is closed"
            )
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(self, url: URL, data: Any, headers: Mapping[str, str]) -> AppendResponse:
        session = self._get_session()
        try:
            async with session.post(
                url,
                data=data,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await self._read_capped(response)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectError(f"could not connect to {url.host}: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            raise AmbiguousError(
                f"no answer from {url.host} after sending ({detail}); "
                "the request may have been processed"
            ) from exc
        return self._interpret(status, raw, retry_after)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise APIError(
                f"response body of {response.content_length} bytes exceeds "
                f"max_response_bytes={limit}",
                status=response.status,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise APIError(
                    f"response body exceeds max_response_bytes={limit}", status=response.status
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _interpret(status: int, raw: bytes, retry_after: str | None) -> AppendResponse:
        text = raw.decode("utf-8", "replace")
        try:
            parsed: AppendResponse | None = decode_response(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            parsed = None
        message = parsed.message if parsed is not None and parsed.message else None
        if status == 403:
            raise AuthenticationError(message or "Unauthorized Token", status=status, body=text)
        if status == 429:
            raise RateLimitError(
                message or "Too Many Requests",
                status=status,
                body=text,
                retry_after=parse_retry_after(retry_after),
            )
        if status >= 500:
            raise ServerError(message or "server error", status=status, body=text)
        if 200 <= status < 300:
            if parsed is None:
                raise APIError(
                    "unexpected response body (not the vendor's JSON answer)",
                    status=status,
                    body=text,
                )
            if parsed.error:
                raise ServerError(parsed.message or "error: true", status=status, body=text)
            return parsed
        raise APIError(message or "unexpected HTTP status", status=status, body=text)

    # -- one request, with retries ---------------------------------------------------

    async def _send(
        self,
        exchange: Exchange,
        url: URL,
        make_data: Callable[[], Any],
        headers: Mapping[str, str],
        *,
        pacer: RatePacer | None = None,
        max_attempts: int | None = None,
        stop: StopSignal | None = None,
    ) -> AppendResponse:
        """Send one request, retrying under the client's policy; raise its last error.

        ``exchange`` is kept up to date so a caller can tell, after a cancel, whether the
        request may have been processed. With ``stop`` fired, no new attempt starts and
        `SendStoppedError` is raised instead.
        """
        policy = self.retry
        pacer = pacer or self._pacer
        attempts_allowed = min(policy.max_attempts, max_attempts or policy.max_attempts)
        deadline = None if policy.timeout is None else anyio.current_time() + policy.timeout
        while True:
            if stop is not None and stop.fired:
                raise SendStoppedError
            if stop is None or not pacer.must_wait():
                await pacer.acquire()
            elif not await stop.run(pacer.acquire):
                raise SendStoppedError
            exchange.attempts += 1
            doubt_before = exchange.maybe_processed
            exchange.maybe_processed = True
            try:
                response = await self._attempt(url, make_data(), headers)
            except RyngError as error:
                if isinstance(error, APIError):
                    exchange.status = error.status
                exchange.maybe_processed = doubt_before or _may_have_been_processed(error)
                if isinstance(error, RateLimitError):
                    pause = error.retry_after
                    pacer.throttled(None if pause is None else min(pause, policy.max_retry_after))
                delay = self._next_delay(error, exchange, attempts_allowed, deadline)
                if delay is None:
                    raise
                if self._on_retry is not None:
                    self._on_retry(
                        RetryDetails(
                            campaign_id=exchange.campaign_id,
                            batch_index=exchange.batch_index,
                            attempt=exchange.attempts,
                            delay=delay,
                            reason=str(error),
                            error=error,
                        )
                    )
                logger.info(
                    "campaign %s%s: attempt %d failed (%s); retrying in %.2fs",
                    exchange.campaign_id,
                    "" if exchange.batch_index is None else f" batch {exchange.batch_index}",
                    exchange.attempts,
                    error,
                    delay,
                )
                if stop is None:
                    await anyio.sleep(delay)
                elif not await stop.run(partial(anyio.sleep, delay)):
                    raise SendStoppedError from error
                continue
            exchange.status = 200
            pacer.succeeded()
            self._budget.record_success()
            return response

    def _next_delay(
        self, error: RyngError, exchange: Exchange, attempts_allowed: int, deadline: float | None
    ) -> float | None:
        """Return the wait before the next attempt, or None if there is none."""
        policy = self.retry
        if exchange.attempts >= attempts_allowed or not is_retryable(error, policy):
            return None
        delay = retry_delay(error, exchange.attempts, policy, self._rng)
        if deadline is not None and anyio.current_time() + delay > deadline:
            return None
        if not self._budget.try_acquire():
            logger.warning("retry budget exhausted; not retrying: %s", error)
            return None
        return delay

    # -- public calls ----------------------------------------------------------------

    async def append(
        self,
        campaign_id: str | int,
        leads: Iterable[LeadInput],
        *,
        name: str | None = None,
        agent_mapping: AgentMapping | str | None = None,
        agents: Sequence[str] | None = None,
        custom_field_names: Mapping[str, str] | None = None,
        terminal_callback_url: str | None = None,
        connect_callback_url: str | None = None,
    ) -> AppendResponse:
        """Append leads to a campaign in one JSON request.

        Args:
            campaign_id: the campaign's id (percent-encoded into the URL).
            leads: `Lead` s or wire-form mappings (``{"number": ..., "customField1": ...}``).
            name: the campaign name Ryng shows for this append.
            agent_mapping: ``"global"``, ``"inline"`` or ``"all-agents"``.
            agents: agent usernames; required (non-empty) with ``"global"``.
            custom_field_names: ``{"customField1Name": "Name", ...}``.
            terminal_callback_url: where Ryng posts each call's terminal callback.
            connect_callback_url: where Ryng posts the connect callbacks.

        Returns:
            The API's answer (``error`` is False).

        Raises:
            ValidationError: a bad lead or option; nothing was sent.
            AuthenticationError: the token was refused (403).
            RateLimitError: still 429 after the retries allowed.
            ServerError: 5xx, or ``"error": true``, after the retries allowed.
            APIError: any other error answer.
            ConnectError: the server could not be reached.
            AmbiguousError: no answer after sending; the leads may have been appended.
        """
        url = URL(self.campaign_url(campaign_id), encoded=True)
        request = build_request(
            name=name,
            agent_mapping=agent_mapping,
            agents=agents,
            custom_field_names=custom_field_names,
            terminal_callback_url=terminal_callback_url,
            connect_callback_url=connect_callback_url,
        )
        body = BodyTemplate(request).body(validate_leads(leads))
        exchange = Exchange(campaign_id=str(campaign_id))
        return await self._send(exchange, url, lambda: body, self._json_headers)

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
        agents_field = _agents_field(agents)
        make_data, filename, retryable = _sheet_source(sheet)
        opened: list[io.IOBase] = []

        def make_form() -> aiohttp.FormData:
            form = aiohttp.FormData()
            content = make_data()
            if isinstance(content, io.IOBase):
                opened.append(content)  # a file we opened from the path: ours to close
            form.add_field("campaign-sheet", content, filename=filename, content_type="text/csv")
            if agents_field is not None:
                form.add_field("agents", agents_field)
            return form

        exchange = Exchange(campaign_id=str(campaign_id))
        try:
            return await self._send(
                exchange, url, make_form, self._headers, max_attempts=None if retryable else 1
            )
        finally:
            for handle in opened:
                handle.close()

    def stream_append(
        self,
        campaign_id: str | int,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        **options: Unpack[BulkOptions],
    ) -> BatchStream:
        """Bulk-load leads, yielding each `BatchResult` as its batch ends.

        Takes the arguments of `bulk_append`. Use it as
        ``async with client.stream_append(...) as results: async for result in results``
        so that leaving the block early stops the load and waits for it to settle; a
        bare ``async for`` that breaks early leaves the load to the garbage collector.
        ``results.report`` is the live `BulkReport`.
        """
        from ._bulk import stream_append

        return stream_append(self, campaign_id, leads, options)

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
                lazily, a batch at a time (yield a new mapping per row).
            **options: see `BulkOptions`: ``batch_size``, ``max_batch_bytes``,
                ``concurrency``, ``rate_limit``, ``on_progress``, ``report``, ``dedupe``,
                ``max_consecutive_failures`` and the campaign options of `append`.

        Returns:
            The final `BulkReport`: every lead read is accepted, failed, unknown, skipped
            or invalid.

        Raises:
            ValidationError: a bad campaign option (before anything is read).
            ConfigurationError: a bad bulk setting, or a closed client.
            AuthenticationError: a 403 stopped the load; ``.report`` is the partial report.
            Exception: whatever the input iterator or a hook raised, re-raised as is
                once the load has settled (pass ``report=`` to keep the partial report).
        """
        from ._bulk import bulk_append

        return await bulk_append(self, campaign_id, leads, options)


def _may_have_been_processed(error: RyngError) -> bool:
    """Say whether a failed attempt may still have appended its leads."""
    if isinstance(error, AmbiguousError):
        return True
    # A 2xx we could not read may have been processed; "error": true (a ServerError)
    # is the vendor's definite refusal.
    return (
        isinstance(error, APIError)
        and 200 <= error.status < 300
        and not isinstance(error, ServerError)
    )


def _agents_field(agents: Sequence[str] | str | None) -> str | None:
    if agents is None:
        return None
    if agents == "in-file":
        return agents
    if isinstance(agents, str) or not isinstance(agents, Sequence):
        raise ValidationError(
            f"must be a list of usernames or 'in-file', got {preview(agents)}", field="agents"
        )
    if not agents:
        raise ValidationError("must name at least one agent, got []", field="agents")
    for index, agent in enumerate(agents):
        if not isinstance(agent, str) or not agent or "," in agent:
            raise ValidationError(
                f"item {index} must be a non-empty username without commas, got {preview(agent)}",
                field="agents",
            )
    return ",".join(agents)


def _sheet_source(sheet: SheetInput) -> tuple[Callable[[], Any], str, bool]:
    """Return (a maker of the part's content for each attempt, its filename, retryable)."""
    if isinstance(sheet, bytes | bytearray | memoryview):
        content = bytes(sheet)
        return (lambda: content), "campaign-sheet.csv", True
    if isinstance(sheet, str | os.PathLike):
        path = Path(sheet)
        if not path.is_file():
            problem = "is not a file" if path.exists() else "no such file"
            raise ValidationError(f"{problem}: {str(path)!r}", field="campaign-sheet")

        def reopen() -> IO[bytes]:
            try:
                return path.open("rb")  # streamed by aiohttp, which closes it
            except OSError as exc:
                raise ValidationError(
                    f"cannot read {str(path)!r}: {exc.strerror or exc}", field="campaign-sheet"
                ) from exc

        return reopen, path.name, True
    if hasattr(sheet, "read"):
        if not isinstance(sheet.read(0), bytes):  # read(0) consumes nothing
            raise ValidationError(
                "the file object must be opened in binary mode ('rb')", field="campaign-sheet"
            )
        seekable = bool(getattr(sheet, "seekable", lambda: False)())
        start = sheet.tell() if seekable else 0
        filename = Path(str(getattr(sheet, "name", "campaign-sheet.csv"))).name

        def chunks() -> AsyncIterator[bytes]:
            # Our own reader, not the file object itself: aiohttp would close the
            # caller's file after sending it, and a retry could not rewind it.
            if seekable:
                sheet.seek(start)
            return _read_chunks(sheet)

        return chunks, filename, seekable
    raise ValidationError(
        f"must be a path, bytes or a binary file object, got {type(sheet).__name__}",
        field="campaign-sheet",
    )


async def _read_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := handle.read(_SHEET_CHUNK):
        yield chunk
