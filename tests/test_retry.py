"""Tests for ryng_async._retry: pure retry decisions, delays, Retry-After and the budget."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ryng_async import (
    AmbiguousError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    RateLimitError,
    RetryPolicy,
    RyngError,
    ServerError,
    TransportError,
    ValidationError,
)
from ryng_async._exceptions import ResourceLimitError, UnreadableResponseError
from ryng_async._retry import (
    RetryBudget,
    backoff_delay,
    is_definite,
    is_retryable,
    may_have_been_processed,
    paces,
    parse_retry_after,
    retry_delay,
)
from ryng_async._sender import interpret

DEFAULT = RetryPolicy()
AMBIGUOUS_OK = RetryPolicy(retry_ambiguous=True)
NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


# -- the definite / ambiguous table -----------------------------------------------------

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
RYNG_500 = b'{"error": true, "message": "Failed to create Campaign"}'


@pytest.mark.parametrize(
    ("status", "ryng_error", "definite"),
    [
        (500, True, True),  # Ryng's documented "Failed to create Campaign"
        (502, True, True),  # Ryng's own JSON, whatever the status
        (504, True, True),
        (500, False, False),  # an HTML 500 from something in between
        (502, False, False),
        (504, False, False),
        (501, False, False),
        (599, False, False),
        (503, False, True),  # RFC 9110: not handled
        (429, False, True),
        (413, False, True),
        (403, False, True),
        (400, False, True),
        (404, False, True),
        (307, False, True),
    ],
)
def test_the_definite_table(status: int, ryng_error: bool, definite: bool) -> None:
    assert is_definite(status, ryng_error=ryng_error, policy=DEFAULT) is definite


def test_a_policy_widens_and_narrows_the_definite_set() -> None:
    wide = RetryPolicy(definite_statuses=frozenset({502, 503, 504}))
    narrow = RetryPolicy(definite_statuses=frozenset())
    assert is_definite(502, ryng_error=False, policy=wide)
    assert is_definite(504, ryng_error=False, policy=wide)
    assert not is_definite(503, ryng_error=False, policy=narrow)
    assert is_definite(503, ryng_error=True, policy=narrow)  # Ryng's JSON always proves it
    assert is_definite(429, ryng_error=False, policy=narrow)  # a 4xx always does


@pytest.mark.parametrize("bad", [{429}, {200}, {600}, {413}])
def test_definite_statuses_hold_only_5xx(bad: set[int]) -> None:
    with pytest.raises(ConfigurationError, match="definite_statuses"):
        RetryPolicy(definite_statuses=frozenset(bad))


@pytest.mark.parametrize(
    ("status", "body", "kind", "processed"),
    [
        (502, NGINX_502, AmbiguousError, True),
        (504, b"<html>504 Gateway Time-out</html>", AmbiguousError, True),
        (500, b"", AmbiguousError, True),
        (500, RYNG_500, ServerError, False),
        (502, RYNG_500, ServerError, False),
        (503, b"<html>503 Service Temporarily Unavailable</html>", ServerError, False),
        (429, b"<html>429</html>", RateLimitError, False),
        (413, b"<html>413 Request Entity Too Large</html>", APIError, False),
        (200, b"<html>ok</html>", UnreadableResponseError, True),
    ],
)
def test_interpret_follows_the_table(
    status: int, body: bytes, kind: type[RyngError], processed: bool
) -> None:
    with pytest.raises(kind) as info:
        interpret(status, body, None)
    assert type(info.value) is kind
    assert may_have_been_processed(info.value) is processed
    assert getattr(info.value, "status", None) == status


def test_a_proxy_page_says_so_with_a_short_excerpt() -> None:
    with pytest.raises(AmbiguousError) as info:
        interpret(502, NGINX_502 * 20, None)
    message = str(info.value)
    assert message.startswith(
        "HTTP 502 from a proxy or gateway (not Ryng's JSON): 502 Bad Gateway 502 Bad Gateway"
    )
    assert "<" not in message
    assert len(message) < 200
    assert info.value.body.startswith("<html>")  # the page stays readable


def test_a_413_names_the_size_sent_and_the_option() -> None:
    with pytest.raises(APIError) as info:
        interpret(413, b"<html>413 Request Entity Too Large</html>", None, sent=92_345)
    assert "92,345 bytes" in str(info.value)
    assert "max_batch_bytes" in str(info.value)


def test_a_503_carries_its_retry_after_and_paces() -> None:
    with pytest.raises(ServerError) as info:
        interpret(503, b"<html>503</html>", "7")
    assert info.value.retry_after == 7.0
    assert paces(info.value)
    assert retry_delay(info.value, 1, DEFAULT, random.Random(0)) == 7.0
    assert not paces(ServerError("Failed to create Campaign", status=500))


def test_a_redirect_names_its_location() -> None:
    with pytest.raises(APIError) as info:
        interpret(302, b"", None, location="https://elsewhere.example/x")
    assert "redirect to https://elsewhere.example/x not followed" in str(info.value)


# -- is_retryable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (RateLimitError("Too Many Requests"), True),
        (ServerError("Failed to create Campaign", status=500), True),
        (ServerError("bad gateway", status=502), True),
        (ServerError("unavailable", status=503), True),
        (ServerError("gateway timeout", status=504), True),
        (ServerError("not implemented", status=501), False),
        (ServerError("version", status=505), False),
        (ServerError("error: true", status=200), False),
        (AuthenticationError("Unauthorized Token", status=403), False),
        (APIError("forbidden", status=403), False),
        (APIError("Bad Request", status=400), False),
        (APIError("not found", status=404), False),
        (APIError("conflict", status=409), False),
        (APIError("too large", status=413), False),
        (APIError("unprocessable", status=422), False),
        (APIError("unreadable body", status=200), False),
        (ConnectError("refused"), True),
        (AmbiguousError("timeout"), False),
        (UnreadableResponseError("empty response body", status=200), False),
        (ResourceLimitError("out of file descriptors", errno=24), False),
        (TransportError("something"), False),
        (ValidationError("bad lead", field="number"), False),
        (ConfigurationError("closed"), False),
        (RyngError("root"), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else type(value).__name__,
)
def test_is_retryable_under_the_default_policy(error: RyngError, retryable: bool) -> None:
    assert is_retryable(error, DEFAULT) is retryable


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        (AmbiguousError("timeout"), True),
        (AmbiguousError("HTTP 502", status=502), True),
        (UnreadableResponseError("empty response body", status=200), True),
        (ConnectError("refused"), False),
        (ServerError("error: true", status=200), False),
        (ServerError("Failed to create Campaign", status=500), False),
        (RateLimitError("Too Many Requests"), False),
        (AuthenticationError("Unauthorized Token", status=403), False),
        (APIError("Bad Request", status=400), False),
        (ResourceLimitError("out of file descriptors", errno=24), False),
        (ConfigurationError("closed"), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else type(value).__name__,
)
def test_only_an_ambiguous_error_may_have_been_processed(error: RyngError, maybe: bool) -> None:
    # One rule: whatever may have been appended is an AmbiguousError.
    assert may_have_been_processed(error) is maybe


def test_an_ambiguous_5xx_is_resent_only_when_ambiguous_retries_are_on() -> None:
    gateway = AmbiguousError("HTTP 502", status=502)
    assert is_retryable(gateway, DEFAULT) is False
    assert is_retryable(gateway, AMBIGUOUS_OK) is True
    # ...and only if its status is among the retried ones.
    assert is_retryable(AmbiguousError("HTTP 501", status=501), AMBIGUOUS_OK) is False


def test_an_unreadable_2xx_is_resent_only_when_ambiguous_retries_are_on() -> None:
    unreadable = UnreadableResponseError("empty response body", status=200)
    assert is_retryable(unreadable, DEFAULT) is False
    assert is_retryable(unreadable, AMBIGUOUS_OK) is True


def test_ambiguous_only_retried_when_the_policy_says_so() -> None:
    assert is_retryable(AmbiguousError("drop"), DEFAULT) is False
    assert is_retryable(AmbiguousError("drop"), AMBIGUOUS_OK) is True


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("Unauthorized Token", status=403),
        APIError("Bad Request", status=400),
        ValidationError("bad"),
        ConfigurationError("bad"),
    ],
)
def test_never_retried_whatever_the_ambiguity_setting(error: RyngError) -> None:
    assert not is_retryable(error, AMBIGUOUS_OK)


def test_retry_statuses_come_from_the_policy() -> None:
    only_503 = RetryPolicy(retry_statuses=frozenset({503}))

    assert is_retryable(ServerError("x", status=503), only_503)
    assert not is_retryable(ServerError("x", status=500), only_503)
    assert not is_retryable(RateLimitError("x"), only_503)
    assert is_retryable(ConnectError("x"), only_503)

    with_408 = RetryPolicy(retry_statuses=frozenset({408, 429}))
    assert is_retryable(APIError("timeout", status=408), with_408)
    assert not is_retryable(AuthenticationError("x", status=403), with_408)


def test_authentication_error_is_never_retried_even_with_an_odd_status() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({401, 500}))
    assert not is_retryable(AuthenticationError("x", status=401), policy)
    assert not is_retryable(AuthenticationError("x", status=500), policy)


# -- backoff ---------------------------------------------------------------------------


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    attempt=st.integers(1, 100),
    initial=st.floats(0.0, 10.0, allow_nan=False),
    max_delay=st.floats(0.0, 100.0, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_is_within_full_jitter_bounds(
    attempt: int, initial: float, max_delay: float, seed: int
) -> None:
    policy = RetryPolicy(initial_delay=initial, max_delay=max_delay)

    delay = backoff_delay(attempt, policy, random.Random(seed))

    assert 0.0 <= delay <= min(max_delay, initial * 2 ** (attempt - 1))
    assert delay == backoff_delay(attempt, policy, random.Random(seed))  # reproducible


def test_backoff_is_jittered_and_grows_until_capped() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=8.0)
    rng = random.Random(1234)

    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (60, 8.0)]:
        draws = [backoff_delay(attempt, policy, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # reaches near the ceiling...
        assert min(draws) < 0.2 * ceiling  # ...and near zero: full jitter
    assert backoff_delay(10_000, policy, rng) <= 8.0  # huge attempt numbers do not overflow


def test_zero_delays_turn_waits_off() -> None:
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0)
    rng = random.Random(0)
    assert {backoff_delay(n, policy, rng) for n in range(1, 20)} == {0.0}


# -- retry_delay -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "cap", "expected"),
    [(3.0, 60.0, 3.0), (0.0, 60.0, 0.0), (120.0, 60.0, 60.0), (3600.0, 5.0, 5.0), (2.5, 0.0, 0.0)],
)
def test_retry_delay_honours_retry_after_capped(
    retry_after: float, cap: float, expected: float
) -> None:
    policy = RetryPolicy(initial_delay=100.0, max_delay=100.0, max_retry_after=cap)
    error = RateLimitError("slow down", retry_after=retry_after)

    assert retry_delay(error, 1, policy, random.Random(0)) == expected


@pytest.mark.parametrize(
    "error",
    [
        RateLimitError("no header", retry_after=None),
        ServerError("x", status=503),
        ConnectError("x"),
    ],
)
def test_retry_delay_falls_back_to_backoff(error: RyngError) -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=4.0)
    delays = [retry_delay(error, 3, policy, random.Random(seed)) for seed in range(50)]

    assert all(0.0 <= d <= 4.0 for d in delays)
    assert delays == [backoff_delay(3, policy, random.Random(seed)) for seed in range(50)]
    assert len(set(delays)) > 1


# -- parse_retry_after -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("120", 120.0),
        ("  5  ", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("-0.5", 0.0),
    ],
)
def test_parse_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 08:28:00 GMT", 3600.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Wednesday, 21-Oct-15 07:28:10 GMT", 10.0),  # RFC 850, obsolete but allowed
        ("Wed Oct 21 07:28:20 2015", 20.0),  # asctime, no zone: UTC
    ],
)
def test_parse_retry_after_http_date(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


def test_parse_retry_after_date_relative_to_the_current_time_by_default() -> None:
    future = (datetime.now(UTC) + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    delay = parse_retry_after(future)
    assert delay is not None
    assert 80.0 <= delay <= 91.0


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "nan", "inf", "-inf", "1e999", "Wed, 99 Foo 2015", "12 apples"],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


# -- RetryBudget -----------------------------------------------------------------------


def test_budget_drains_and_refuses() -> None:
    budget = RetryBudget(10, cost=5, refund=1)
    assert budget.tokens == 10

    assert budget.try_acquire()
    assert budget.try_acquire()
    assert budget.tokens == 0
    assert not budget.try_acquire()
    assert budget.tokens == 0  # a refusal takes nothing


def test_budget_refills_with_successes_up_to_capacity() -> None:
    budget = RetryBudget(10, cost=5, refund=1)
    budget.try_acquire()
    budget.try_acquire()

    for _ in range(4):
        budget.record_success()
    assert budget.tokens == 4
    assert not budget.try_acquire()
    budget.record_success()
    assert budget.try_acquire()

    for _ in range(100):
        budget.record_success()
    assert budget.tokens == 10


def test_full_budget_does_not_overflow() -> None:
    budget = RetryBudget(3, cost=1, refund=2)
    budget.record_success()
    assert budget.tokens == 3


def test_unlimited_budget() -> None:
    budget = RetryBudget(None, cost=5, refund=1)
    assert budget.tokens is None
    assert all(budget.try_acquire() for _ in range(1000))
    budget.record_success()
    assert budget.tokens is None


def test_zero_budget_never_retries_and_zero_cost_always_does() -> None:
    assert not RetryBudget(0, cost=1, refund=1).try_acquire()
    free = RetryBudget(0, cost=0, refund=0)
    assert all(free.try_acquire() for _ in range(10))


def test_budget_for_policy() -> None:
    budget = RetryBudget.for_policy(RetryPolicy(budget=7, retry_cost=3, success_refund=2))
    assert budget.tokens == 7
    assert budget.try_acquire()
    assert budget.tokens == 4
    budget.record_success()
    assert budget.tokens == 6
    assert RetryBudget.for_policy(RetryPolicy(budget=None)).tokens is None


# -- RetryPolicy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"initial_delay": -0.1},
        {"initial_delay": float("nan")},
        {"initial_delay": float("inf")},
        {"max_delay": -1.0},
        {"max_delay": float("inf")},
        {"max_retry_after": -1.0},
        {"max_retry_after": float("nan")},
        {"timeout": 0},
        {"timeout": -5.0},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"retry_statuses": frozenset({403})},
        {"retry_statuses": frozenset({500, 403})},
        {"retry_statuses": frozenset({200})},
        {"retry_statuses": frozenset({302})},
        {"retry_statuses": frozenset({600})},
        {"budget": -1},
        {"retry_cost": -1},
        {"success_refund": -1},
    ],
)
def test_bad_retry_policy_is_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        RetryPolicy(**options)


def test_retry_policy_defaults_and_edges() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts >= 2
    assert policy.retry_statuses == frozenset({429, 500, 502, 503, 504})
    assert policy.retry_ambiguous is False
    assert 0 < policy.initial_delay <= policy.max_delay

    edges = RetryPolicy(
        max_attempts=1, initial_delay=0, max_delay=0, timeout=None, budget=None, retry_cost=0
    )
    assert edges.timeout is None
    assert edges.budget is None
    assert RetryPolicy.no_retries().max_attempts == 1


def test_retry_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 10  # type: ignore[misc]
