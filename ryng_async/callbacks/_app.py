"""The aiohttp.web receiver for Ryng's callbacks: `create_app`, `serve`, and its access log.

One route takes both kinds of callback (their ``callbackType`` tells them apart):

    POST /callbacks                 no secret configured
    POST /callbacks/{secret}        a secret configured (or ``/callbacks?secret=...``)
    GET  /healthz                   200 while the receiver runs

Answers: 200 once the callback is stored (a duplicate too), 400 for a body that is not a
callback, 403 for a missing or wrong secret, 405 for another method, 408 for a body not
received within ``body_timeout``, 413 for a body over ``max_body``, and 500 only when the
store failed, so that Ryng sends it again (logged with its cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote, unquote, unquote_plus

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError
from aiohttp.http_exceptions import ContentEncodingError

from .._callback_events import CallbackEvent, duplicate_key, parse_callback
from .._exceptions import ConfigurationError, ValidationError
from ._limits import DEFAULT_HEADER_TIMEOUT, ConnectionGuard, accept_error_handler
from ._stores import DEFAULT_STORE_PATH, CallbackStore, SQLiteCallbackStore, callback_key

__all__ = [
    "CALLBACK_PATH",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "CallbackHandler",
    "RedactingAccessLogger",
    "SecretLogFilter",
    "callback_url",
    "create_app",
    "serve",
]

logger = logging.getLogger("ryng_async.callbacks")

DEFAULT_MAX_BODY: Final = 256 * 1024
"""The largest callback body accepted, in bytes (the vendor's examples are under 3 KB)."""

DEFAULT_BODY_TIMEOUT: Final = 30.0
"""Seconds a request has to send its whole body once its headers are in (408 beyond)."""

CALLBACK_PATH: Final = "/callbacks"
"""The path callbacks are posted to (followed by ``/{secret}`` when one is set)."""

_HEALTH_PATH: Final = "/healthz"
_MIN_SECRET: Final = 16
# RFC 3986 unreserved characters: the secret sits in a URL path segment as it is.
_SECRET_CHARS: Final = re.compile(r"[A-Za-z0-9._~-]+")
_REASON_LIMIT: Final = 200

_STORE_KEY: Final = web.AppKey("ryng_callbacks_store", CallbackStore)

_encode = msgspec.json.encode
_OK: Final = _encode({"ok": True, "duplicate": False})
_DUPLICATE: Final = _encode({"ok": True, "duplicate": True})
_HEALTHY: Final = _encode({"ok": True})
_JSON: Final = "application/json"


class CallbackHandler(Protocol):
    """An async callable the receiver calls with each new callback, after storing it.

    It is not called for a duplicate. Its exceptions are logged and do not change the
    answer (the callback is already stored); a slow handler delays the 200, so hand long
    work to a queue. If the process dies between storing and the handler, the handler is
    not called for that callback: read the store for anything that must not be missed.
    """

    async def __call__(self, event: CallbackEvent, /) -> None:
        """Act on one stored callback."""
        ...


def _error(status: int, reason: str) -> web.Response:
    if len(reason) > _REASON_LIMIT:
        reason = reason[: _REASON_LIMIT - 3] + "..."
    return web.Response(status=status, body=_encode({"error": reason}), content_type=_JSON)


def _too_large(max_body: int) -> web.Response:
    response = _error(413, f"body over {max_body} bytes")
    # Answered before the rest of the body is read; aiohttp then discards what the client
    # still sends (its lingering close, at most ``lingering_time``, so the client reads
    # the answer rather than a reset) and closes the connection.
    response.force_close()
    return response


def _closing(request: web.Request, response: web.Response) -> web.Response:
    """Answer, then close the connection without reading the rest of the body.

    aiohttp reads what is left of a body after the answer (its lingering close): from a
    client that trickles, for up to ``lingering_time``; from a body that failed to
    decode, it raises again and logs "Unhandled exception" with a traceback. Marking the
    body's stream at its end skips that read. The one aiohttp detail relied on here
    (``StreamReader.feed_eof``), tested in test_callbacks_bodies.py.
    """
    request.content.feed_eof()
    response.force_close()
    return response


async def _read_capped(request: web.Request, max_body: int) -> bytes | None:
    """Read the body, or return None as soon as it exceeds ``max_body`` bytes."""
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_body:
            return None


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


class _ServerLogger(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, less the traceback of a body in an undecodable encoding.

    aiohttp answers a ``Content-Encoding`` it has no decoder for (``br`` without the
    Brotli package) with a 400 while parsing the headers, before any handler runs, and
    logs the client's mistake with a full traceback: one line without it says the same.
    Other parse errors keep aiohttp's record (scrubbed of the secret by `serve`).
    """

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, ContentEncodingError):
            logger.info("refused an unreadable request (400): %s", " ".join(_cause(error).split()))
            return
        super().exception(msg, *args, **kwargs)


def _check_secret(secret: bytes, given: str | None) -> bool:
    if given is None:
        return False
    # Non-ASCII cannot match, but compare_digest on str refuses it: compare bytes.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret)


def _positive_seconds(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")


def _validate_options(secret: str | None, max_body: int, body_timeout: float) -> None:
    if secret is not None:
        if not isinstance(secret, str) or not _SECRET_CHARS.fullmatch(secret):
            raise ConfigurationError(
                "secret must be a non-empty string of letters, digits and '-._~' "
                "(e.g. secrets.token_urlsafe(32))"
            )
        if len(secret) < _MIN_SECRET:
            raise ConfigurationError(
                f"secret must be at least {_MIN_SECRET} characters long, got {len(secret)}"
            )
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ConfigurationError(f"max_body must be a positive int, got {max_body!r}")
    _positive_seconds("body_timeout", body_timeout)


def create_app(
    *,
    store: CallbackStore | None = None,
    handler: CallbackHandler | None = None,
    secret: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> web.Application:
    """Build the aiohttp.web application that receives Ryng's callbacks.

    Give Ryng ``http(s)://<your host>/callbacks`` (or ``.../callbacks/<secret>``) as both
    ``connectCallbackUrl`` and ``terminalCallbackUrl``; see `callback_url`.

    Args:
        store: where callbacks are kept; the caller opens and closes it. None: a
            `SQLiteCallbackStore` at ``ryng-callbacks.db`` in the working directory,
            opened when the app starts and closed when it stops.
        handler: an async callable called with each new callback once it is stored.
        secret: a shared secret Ryng must send in the path (``/callbacks/<secret>``) or
            the query (``?secret=<secret>``); letters, digits and ``-._~``, at least 16
            characters. Compared in constant time and never logged by this app; serve the
            app with `RedactingAccessLogger` (as `serve` does) to keep it out of the
            access log too.
        max_body: the largest body accepted, in bytes; a larger one is answered 413
            without being read whole.
        body_timeout: seconds a request has, once its headers are in, to send its whole
            body; a slower one is answered 408 and its connection closed. The header read
            timeout and the bound on open connections are `serve`'s: aiohttp.web has
            neither, so under ``web.run_app`` put a proxy (nginx) in front.

    Returns:
        The application, for ``web.run_app``, an ``AppRunner``, or a test server.

    Raises:
        ConfigurationError: ``secret``, ``max_body`` or ``body_timeout`` is unusable.
    """
    _validate_options(secret, max_body, body_timeout)
    app = web.Application(
        client_max_size=max_body,
        handler_args={"logger": _ServerLogger(logging.getLogger("aiohttp.server"))},
    )
    if store is not None:
        app[_STORE_KEY] = store
    else:
        app.cleanup_ctx.append(_default_store)
    receive = _Receiver(
        handler=handler, secret=secret, max_body=max_body, body_timeout=body_timeout
    ).receive
    app.router.add_post(CALLBACK_PATH, receive)
    if secret is not None:
        app.router.add_post(CALLBACK_PATH + "/{secret}", receive)
    app.router.add_get(_HEALTH_PATH, _health)
    return app


async def _default_store(app: web.Application) -> AsyncIterator[None]:
    path = Path(DEFAULT_STORE_PATH)
    store = await SQLiteCallbackStore(path).open()
    where = await asyncio.to_thread(path.resolve)
    app[_STORE_KEY] = store
    logger.info("storing callbacks in %s", where)
    try:
        yield
    finally:
        await store.aclose()


async def _health(_: web.Request) -> web.Response:
    return web.Response(body=_HEALTHY, content_type=_JSON)


class _Receiver:
    """The POST handler: check the secret, read within the cap, parse, store, answer."""

    def __init__(
        self,
        *,
        handler: CallbackHandler | None,
        secret: str | None,
        max_body: int,
        body_timeout: float,
    ) -> None:
        self.handler = handler
        self.expected = None if secret is None else secret.encode()
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def receive(self, request: web.Request) -> web.Response:
        if self.expected is not None:
            given = request.match_info.get("secret")
            if given is None:
                given = request.query.get("secret")
            if not _check_secret(self.expected, given):
                return _error(403, "missing or wrong secret")
        length = request.content_length
        if length is not None and length > self.max_body:
            return _too_large(self.max_body)
        try:
            if request.content.is_eof():  # all of it is here (the usual case): no timer
                body = await _read_capped(request, self.max_body)
            else:
                async with asyncio.timeout(self.body_timeout):
                    body = await _read_capped(request, self.max_body)
        except TimeoutError:
            logger.info("a body took over %ss to arrive (408)", self.body_timeout)
            return _closing(
                request, _error(408, f"body not received within {self.body_timeout:g}s")
            )
        except (HttpProcessingError, web.RequestPayloadError) as exc:
            # Bad chunked framing or compressed data: the body cannot be read.
            reason = " ".join(_cause(exc).split())
            logger.info("refused an unreadable body (400): %s", reason)
            return _closing(request, _error(400, f"unreadable body: {reason}"))
        if body is None:
            return _too_large(self.max_body)
        try:
            event = parse_callback(body)
            duplicate = duplicate_key(body)
        except ValidationError as exc:
            logger.info("refused a callback body (400): %s", exc)
            return _error(400, str(exc))
        if duplicate is not None:
            reason = f"callback body names {duplicate!r} twice in one object"
            logger.info("refused a callback body (400): %s", reason)
            return _error(400, reason)
        key = callback_key(event)
        try:
            stored = await request.app[_STORE_KEY].add(event, body)
        except ValidationError as exc:  # a store may refuse what parsed (e.g. not UTF-8)
            logger.info("refused a callback body (400): %s", exc)
            return _error(400, str(exc))
        except Exception as exc:
            logger.exception(
                "answered 500: could not store callback %s, so Ryng resends it: %s",
                key,
                _cause(exc),  # noqa: TRY401 - the line names the cause, the traceback follows
            )
            return _error(500, "could not store the callback; send it again")
        if not stored:
            logger.debug("duplicate callback %s", key)
            return web.Response(body=_DUPLICATE, content_type=_JSON)
        if self.handler is not None:
            try:
                await self.handler(event)
            except Exception:
                logger.exception("callback handler failed on %s (the callback is stored)", key)
        return web.Response(body=_OK, content_type=_JSON)


_PATH_SAFE: Final = "/*:@!$&'()+,;=-._~"
_QUERY_SPLIT: Final = re.compile(r"([&;])")


def _decoded(text: str, *, plus: bool = False) -> str:
    # Decode until stable (a few rounds): a double-encoded name is still the name.
    for _ in range(3):
        decoded = unquote_plus(text) if plus else unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def redact(path_qs: str) -> str:
    """Return a request target with the callback secret replaced by ``***``.

    Judged on the decoded path, whatever its spelling (``/%63allbacks/...``,
    ``//Callbacks/...``, ``/api/callbacks/...``): everything after a segment naming
    ``callbacks`` is replaced; in the query, the value of any parameter whose decoded
    name holds ``secret``. The path comes back decoded and quoted again.
    """
    path, question, query = path_qs.partition("?")
    segments = _decoded(path).split("/")
    for index, segment in enumerate(segments):
        if "callbacks" in segment.lower():
            if any(segments[index + 1 :]):
                segments[index + 1 :] = ["***"]
            break
    redacted = quote("/".join(segments), safe=_PATH_SAFE)
    if not question:
        return redacted
    parts = _QUERY_SPLIT.split(query)
    for index in range(0, len(parts), 2):
        name, equals, _ = parts[index].partition("=")
        if "secret" in _decoded(name, plus=True).strip().lower():
            parts[index] = f"{name}{equals}***"
    return f"{redacted}?{''.join(parts)}"


class SecretLogFilter(logging.Filter):
    """A logging filter that replaces a secret's every occurrence in a record with ``***``.

    It looks in the message, its arguments, the traceback and the stack, for the secret
    as it is and percent-encoded (``%73ecret``). aiohttp logs the request line of a
    request it cannot parse ("Error handling request"), secret included: `serve` puts
    this filter on aiohttp's and this package's loggers while it runs. Under
    ``web.run_app``, add it yourself:

        for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web"):
            logging.getLogger(name).addFilter(SecretLogFilter(secret))
    """

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self._encoded = re.compile(rf"[A-Za-z0-9._~%+-]{{{len(secret)},}}")

    def scrub(self, text: str) -> str:
        """Return ``text`` with the secret, plain or percent-encoded, replaced by ``***``."""
        text = text.replace(self.secret, "***")
        if "%" in text:
            text = self._encoded.sub(
                lambda m: "***" if self.secret in _decoded(m.group()) else m.group(), text
            )
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            scrubbed = self.scrub(record.exc_text)
            if scrubbed != record.exc_text:
                # Formatters use exc_text once it is set; drop exc_info so none re-renders.
                record.exc_text, record.exc_info = scrubbed, None
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


# Loggers that may carry a request line or URL: aiohttp's, asyncio's and this package's.
_SCRUBBED_LOGGERS: Final = (
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.internal",
    "asyncio",
    "ryng_async",
    "ryng_async.callbacks",
)


@contextlib.contextmanager
def scrubbing(secret: str | None) -> Iterator[None]:
    """Put a `SecretLogFilter` for ``secret`` on the loggers above while the block runs."""
    if secret is None:
        yield
        return
    secret_filter = SecretLogFilter(secret)
    loggers = [logging.getLogger(name) for name in _SCRUBBED_LOGGERS]
    for each in loggers:
        each.addFilter(secret_filter)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(secret_filter)


class RedactingAccessLogger(AbstractAccessLogger):
    """An aiohttp access logger that never writes the callback secret.

    aiohttp's default access log writes each request line, secret included. Pass this
    class instead: ``web.run_app(app, access_log_class=RedactingAccessLogger)``. A line
    reads ``127.0.0.1 "POST /callbacks/*** HTTP/1.1" 200 33 0.001234s``.
    """

    @property
    def enabled(self) -> bool:
        """Whether lines would be written (aiohttp skips the call otherwise)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one request's line to the access log."""
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s %.6fs',
            request.remote,
            request.method,
            redact(request.raw_path),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )


def callback_url(host: str, port: int, secret: str | None = None, *, scheme: str = "http") -> str:
    """Return the URL to give Ryng for a receiver listening on ``host:port``.

    Behind a proxy or load balancer, give Ryng the public address instead, with the same
    path.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    path = CALLBACK_PATH if secret is None else f"{CALLBACK_PATH}/{secret}"
    return f"{scheme}://{host}:{port}{path}"


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    store_path: str | Path = DEFAULT_STORE_PATH,
    secret: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    handler: CallbackHandler | None = None,
    on_ready: Callable[[str], object] | None = None,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_connections: int | None = None,
) -> None:
    """Run the receiver with a `SQLiteCallbackStore` until cancelled.

    For ``ryng-async callbacks serve``. The access log goes through
    `RedactingAccessLogger`, and a `SecretLogFilter` keeps the secret out of every log.
    Connections that send no complete headers within ``header_timeout`` are closed, and
    at most ``max_connections`` are open at once (one more closes the oldest idle one),
    so idle or slow clients cannot shut real callbacks out.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one (``on_ready`` gets the real URL).
        store_path: the SQLite store's file.
        secret: the shared secret (see `create_app`).
        max_body: the largest body accepted, in bytes.
        handler: called with each new callback once stored.
        on_ready: called once listening, with the URL to give Ryng.
        header_timeout: seconds a connection has to send complete request headers.
        body_timeout: seconds a request has to send its body (see `create_app`).
        max_connections: the most connections open at once; None: the descriptor
            limit (``ulimit -n``) less 64 kept for the store and logs.

    Raises:
        ConfigurationError: bad options or an unusable store file.
        OSError: the address cannot be bound.
    """
    _validate_options(secret, max_body, body_timeout)
    _positive_seconds("header_timeout", header_timeout)
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ConfigurationError(f"max_connections must be a positive int, got {max_connections!r}")
    with scrubbing(secret):
        store = await SQLiteCallbackStore(store_path).open()
        try:
            await _serve_app(
                create_app(
                    store=store,
                    handler=handler,
                    secret=secret,
                    max_body=max_body,
                    body_timeout=body_timeout,
                ),
                host=host,
                port=port,
                secret=secret,
                on_ready=on_ready,
                header_timeout=header_timeout,
                max_connections=max_connections,
            )
        finally:
            await store.aclose()


async def _serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    secret: str | None,
    on_ready: Callable[[str], object] | None,
    header_timeout: float,
    max_connections: int | None,
) -> None:
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(accept_error_handler(previous_handler))
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, handle_signals=False)
    guard = ConnectionGuard(header_timeout=header_timeout, max_connections=max_connections)
    app.middlewares.append(guard.middleware)
    await runner.setup()
    try:
        # aiohttp.web.Server is documented as a protocol factory for loop.create_server:
        # the guard wraps it, as TCPSite would use it unwrapped.
        guard.server = runner.server
        server = await loop.create_server(guard, host, port, reuse_address=True)
        try:
            bound = port
            for sock in server.sockets:
                bound = int(sock.getsockname()[1])
                break
            if on_ready is not None:
                on_ready(callback_url(host, bound, secret))
            await guard.watch()  # until cancelled
        finally:
            server.close()
    finally:
        await runner.cleanup()
        loop.set_exception_handler(previous_handler)
