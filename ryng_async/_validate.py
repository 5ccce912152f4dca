"""Every settings check, before anything is sent.

Client settings (token, subdomain, base URL, timeouts), campaign ids and options, bulk
settings and hooks are checked here, each failure a `ConfigurationError` or
`ValidationError` naming the setting or field. Leads are checked in `_lead_checks`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import AsyncIterable, Collection, Iterable, Mapping
from ipaddress import ip_address
from typing import Any, Protocol, Unpack
from urllib.parse import urlsplit

from yarl import URL

from ._exceptions import ConfigurationError, ValidationError, preview
from ._lead_checks import check_agents, check_text
from ._models import AgentMapping, AppendRequest, CampaignOptions, CustomerData

__all__ = [
    "CAMPAIGN_OPTION_NAMES",
    "build_request",
    "check_campaign_id",
    "check_hook",
    "check_int",
    "check_keepalive",
    "check_keywords",
    "check_lead_source",
    "check_limiter",
    "check_positive",
    "check_rate",
    "check_retry_policy",
    "check_shard",
    "check_token",
    "resolve_base_url",
]

CAMPAIGN_OPTION_NAMES = frozenset(CampaignOptions.__annotations__)
"""The keyword names of the campaign options (`CampaignOptions`)."""

_CUSTOM_FIELD_NAME = re.compile(r"customField[1-9][0-9]*Name")


_MAX_CAMPAIGN_ID = 256
_SUBDOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")


# -- client and bulk settings ---------------------------------------------------------


def check_token(token: object) -> str:
    """Return the access token if it is usable in a header; refuse it without echoing it."""
    if token is None:
        raise ConfigurationError("no access token: pass access_token= or set RYNG_ACCESS_TOKEN")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ConfigurationError(
            "access_token must be visible ASCII characters only "
            "(no spaces, CR/LF or control characters)"
        )
    return token


def resolve_base_url(
    subdomain: object, base_url: object, *, allow_insecure_http: bool = False
) -> str:
    """Return the API base URL (no trailing slash) from a subdomain or an explicit URL.

    Plain ``http://`` is refused unless its host is loopback (``localhost``, 127.0.0.0/8,
    ``::1``) or ``allow_insecure_http`` is true: every request carries the access token,
    which would travel in clear. A URL carrying a user or password is refused too.
    """
    if base_url is not None:
        try:
            url = URL(base_url)  # type: ignore[arg-type]  # anything else is refused below
            usable = bool(url.scheme in {"http", "https"} and url.host and url.port)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"base_url is not a usable URL: {_shown(base_url)}") from exc
        if not usable or url.query_string or url.fragment:
            raise ConfigurationError(
                "base_url must be an absolute http(s) URL without query or fragment, "
                f"got {_shown(base_url)}"
            )
        if url.user is not None or url.password is not None:
            raise ConfigurationError(
                "base_url must not carry a user or password (the API authenticates with "
                "the access token)"
            )
        if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
            raise ConfigurationError(
                f"base_url {_shown(base_url)} is plain http to {url.host}, which is not a "
                "loopback address: the access token would travel unencrypted. Use https://, "
                "or pass allow_insecure_http=True if the network path is trusted"
            )
        return str(url).rstrip("/")
    if subdomain is None:
        raise ConfigurationError(
            "no subdomain: pass subdomain= (or base_url=), or set RYNG_SUBDOMAIN"
        )
    if not isinstance(subdomain, str) or not _SUBDOMAIN.fullmatch(subdomain):
        raise ConfigurationError(
            f"subdomain must be one DNS label (letters, digits, '-'), got {preview(subdomain)}"
        )
    return f"https://{subdomain.lower()}.ryng.in"


def _is_loopback(host: str | None) -> bool:
    """Say whether ``host`` is loopback: ``localhost``, 127.0.0.0/8 or ``::1``."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(value: object) -> str:
    """A URL setting as shown in an error: cut, and without its user and password."""
    if isinstance(value, str):
        try:
            url = URL(value)
            if url.user is not None or url.password is not None:
                value = str(url.with_user(None))
        except (TypeError, ValueError):
            value = "<unparsable URL>"
    return preview(value, 120)


def check_keepalive(value: object) -> float:
    """Return the keep-alive timeout if it is a finite number of seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(
            f"keepalive_timeout must be a number of seconds >= 0 (0: never reuse a "
            f"connection), got {value!r}"
        )
    return float(value)


def check_campaign_id(campaign_id: object) -> str:
    """Return the campaign id as a string usable as one URL path segment."""
    if isinstance(campaign_id, int) and not isinstance(campaign_id, bool):
        campaign_id = str(campaign_id)
    if not isinstance(campaign_id, str) or not campaign_id:
        raise ValidationError(
            f"must be a non-empty string, got {preview(campaign_id)}", field="campaign_id"
        )
    if campaign_id in {".", ".."}:
        raise ValidationError(f"{campaign_id!r} is not a usable path segment", field="campaign_id")
    if len(campaign_id) > _MAX_CAMPAIGN_ID:
        # Percent-encoded into the request line, which servers cap at about 8 kB.
        raise ValidationError(
            f"must be at most {_MAX_CAMPAIGN_ID} characters, got {len(campaign_id)}",
            field="campaign_id",
        )
    return campaign_id


def check_positive(value: object, name: str, *, allow_none: bool = False) -> None:
    """Refuse anything but a number > 0 (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; else refuse it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_rate(rate: object, name: str = "rate_limit") -> float | None:
    """Return ``rate`` as a float if it is a number > 0, None if None; else refuse it."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ConfigurationError(
            f"{name} must be a number of requests per second or None, got {rate!r}"
        )
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigurationError(f"{name} must be > 0 requests per second or None, got {rate!r}")
    return float(rate)


def check_hook(hook: object, name: str) -> None:
    """Refuse a hook that is not a plain callable (an async one would never be awaited)."""
    if hook is None:
        return
    if not callable(hook) or inspect.iscoroutinefunction(hook):
        raise ConfigurationError(
            f"{name} must be a plain (not async) callable, got {hook!r}; hooks run between "
            "requests and must return quickly"
        )


_LIMITER_MEMBERS = ("acquire", "throttled", "succeeded", "rate")


def check_limiter(limiter: Any, rate_limit: object) -> Any:
    """Return ``limiter`` if it meets the `Limiter` protocol (None passes); else refuse it.

    A limiter and a ``rate_limit`` together are refused: which one would pace is unclear.
    """
    if limiter is None:
        return None
    missing = [name for name in _LIMITER_MEMBERS if not hasattr(limiter, name)]
    if missing:
        raise ConfigurationError(
            f"limiter must meet the Limiter protocol (async acquire(), throttled(retry_after), "
            f"succeeded() and a rate property); {limiter!r} lacks {', '.join(missing)}"
        )
    if rate_limit is not None:
        raise ConfigurationError(
            "pass either limiter= or rate_limit=, not both (a limiter sets its own rate)"
        )
    return limiter


def check_keywords(options: Mapping[str, object], allowed: Collection[str], caller: str) -> None:
    """Refuse keyword options ``caller`` does not take, naming them (as Python would)."""
    unknown = sorted(options.keys() - set(allowed))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments: {', '.join(unknown)}")


def check_shard(shard: object) -> tuple[int, int] | None:
    """Return ``shard`` as ``(index, count)`` with ``0 <= index < count``, or None."""
    if shard is None:
        return None
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
        or not 0 <= shard[0] < shard[1]
    ):
        raise ConfigurationError(
            f"shard must be (index, count) with 0 <= index < count, got {shard!r}"
        )
    return int(shard[0]), int(shard[1])


def check_lead_source(leads: object) -> None:
    """Refuse a bulk input that is not an iterable or async iterable of leads."""
    if not isinstance(leads, AsyncIterable | Iterable) or isinstance(leads, str | bytes | Mapping):
        raise ValidationError(
            f"must be an iterable or async iterable of leads, got {type(leads).__name__}",
            field="leads",
        )


class _RetrySettings(Protocol):
    @property
    def max_attempts(self) -> int: ...
    @property
    def initial_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def max_retry_after(self) -> float: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def retry_statuses(self) -> frozenset[int]: ...
    @property
    def definite_statuses(self) -> frozenset[int]: ...
    @property
    def budget(self) -> int | None: ...
    @property
    def retry_cost(self) -> int: ...
    @property
    def success_refund(self) -> int: ...


def _check_policy(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(f"RetryPolicy: {message}")


def check_retry_policy(policy: _RetrySettings) -> None:
    """Refuse a `RetryPolicy` whose settings cannot work, naming the setting."""
    _check_policy(policy.max_attempts >= 1, f"max_attempts must be >= 1, got {policy.max_attempts}")
    for name in ("initial_delay", "max_delay", "max_retry_after"):
        value = getattr(policy, name)
        _check_policy(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value}")
    _check_policy(
        policy.timeout is None or (math.isfinite(policy.timeout) and policy.timeout > 0),
        f"timeout must be > 0 or None, got {policy.timeout}",
    )
    bad = sorted(s for s in policy.retry_statuses if s == 403 or not 400 <= s <= 599)
    _check_policy(not bad, f"retry_statuses may only hold 4xx/5xx other than 403, got {bad}")
    bad = sorted(s for s in policy.definite_statuses if not 500 <= s <= 599)
    _check_policy(not bad, f"definite_statuses may only hold 5xx statuses, got {bad}")
    _check_policy(
        policy.budget is None or policy.budget >= 0, f"budget must be >= 0, got {policy.budget}"
    )
    _check_policy(policy.retry_cost >= 0, f"retry_cost must be >= 0, got {policy.retry_cost}")
    _check_policy(
        policy.success_refund >= 0, f"success_refund must be >= 0, got {policy.success_refund}"
    )


def _check_url(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be a URL string, got {preview(value)}", field=field)
    check_text(value, field)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError(f"must be an absolute http(s) URL, got {preview(value)}", field=field)
    return value


def build_request(**options: Unpack[CampaignOptions]) -> AppendRequest:
    """Validate the campaign options of an append and return its envelope (no leads yet).

    Raises:
        ValidationError: naming the option in wire form and the rule it broke.
    """
    name = options.get("name")
    agent_mapping = options.get("agent_mapping")
    agents = options.get("agents")
    custom_field_names = options.get("custom_field_names")
    terminal_callback_url = options.get("terminal_callback_url")
    connect_callback_url = options.get("connect_callback_url")
    if name is not None and not isinstance(name, str):
        raise ValidationError(f"must be a string, got {preview(name)}", field="name")
    if name is not None:
        check_text(name, "name")
    mapping: str | None = None
    if agent_mapping is not None:
        try:
            mapping = AgentMapping(agent_mapping).value
        except ValueError:
            choices = ", ".join(repr(m.value) for m in AgentMapping)
            raise ValidationError(
                f"must be one of {choices}, got {preview(agent_mapping)}", field="agentMapping"
            ) from None
    agent_list = None if agents is None else check_agents(agents, "agents", None)
    if mapping == AgentMapping.GLOBAL and agent_list is None:
        raise ValidationError(
            "agent_mapping='global' needs a non-empty agents list", field="agents"
        )
    if agent_list is not None and mapping is None:
        raise ValidationError(
            "agents were given without agent_mapping; Ryng would ignore them "
            "(pass agent_mapping='global')",
            field="agents",
        )
    names: dict[str, str] | None = None
    if custom_field_names is not None:
        if not isinstance(custom_field_names, Mapping):
            raise ValidationError(
                f"must be a mapping, got {preview(custom_field_names)}", field="customFieldNames"
            )
        names = {}
        for key, value in custom_field_names.items():
            if not isinstance(key, str) or not _CUSTOM_FIELD_NAME.fullmatch(key):
                raise ValidationError(
                    f"keys must look like 'customField<N>Name' with N >= 1, got {preview(key)}",
                    field="customFieldNames",
                )
            if not isinstance(value, str):
                raise ValidationError(
                    f"values must be strings, got {preview(value)}", field=f"customFieldNames.{key}"
                )
            check_text(value, f"customFieldNames.{key}")
            names[key] = value
    return AppendRequest(
        name=name,
        agent_mapping=mapping,
        agents=agent_list,
        custom_field_names=names,
        customer_data=CustomerData(
            terminal_callback_url=None
            if terminal_callback_url is None
            else _check_url(terminal_callback_url, "terminalCallbackUrl"),
            connect_callback_url=None
            if connect_callback_url is None
            else _check_url(connect_callback_url, "connectCallbackUrl"),
        ),
    )
