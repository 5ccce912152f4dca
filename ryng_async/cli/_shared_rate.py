"""``append --redis-url``: one rate limit shared through Redis by every worker of a load.

N workers running ``append --shard I/N`` with their own ``--rate-limit`` would send N times
the account's rate; with ``--redis-url`` they take their requests from one schedule held
in Redis (`ryng_async.redis.RedisLimiter`), ``--rate-limit`` requests per second in all.
Redis unreachable or lost stops the load (exit 4, `ExitCode.RESOURCE`), never an
unlimited send; with ``--redis-fallback local`` the worker goes on at its share instead,
``--rate-limit`` over ``--redis-workers`` (by default the N of ``--shard I/N``). Redis
refusing the URL's password or the ACL user's rights is a settings mistake (exit 2).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ._common import CliError, env_option, non_negative_float, positive_int

if TYPE_CHECKING:
    from ..redis import RedisLimiter

__all__ = ["add_redis_options", "redis_limiter"]

FALLBACKS = ("fail", "local")

# What the "cannot reach Redis" error suggests, in the command line's words.
_FALLBACK_HINT = (
    "add --redis-fallback local (with --shard I/N or --redis-workers N) to go on at this "
    "worker's share of --rate-limit"
)


def _fallback(text: str) -> str:
    """``fail`` or ``local`` (argparse type; also checks the environment variable)."""
    if text not in FALLBACKS:
        raise argparse.ArgumentTypeError(f"must be fail or local, got {text!r}")
    return text


def add_redis_options(group: Any, parser: argparse.ArgumentParser) -> None:
    """Add the ``--redis-*`` options (URL, key, max outage, fallback, workers) to ``group``."""
    env_option(
        group,
        parser,
        "--redis-url",
        env="RYNG_REDIS_URL",
        metavar="URL",
        help="share --rate-limit with every worker naming the same --redis-key on this "
        "Redis (redis://[user:password@]host:6379/0; needs the redis extra); Redis "
        "unreachable or lost stops the load with exit 4 (unless --redis-fallback local), a "
        "password or ACL user Redis refuses with exit 2",
    )
    group.add_argument(
        "--redis-key",
        metavar="KEY",
        help="the name of the shared limit (default: the account: --subdomain, else the base URL)",
    )
    env_option(
        group,
        parser,
        "--redis-max-outage",
        env="RYNG_REDIS_MAX_OUTAGE",
        type=non_negative_float,
        metavar="SECONDS",
        help="how long to wait, sending nothing, for a Redis lost mid-load to come back "
        "before stopping (default: 10)",
    )
    env_option(
        group,
        parser,
        "--redis-fallback",
        env="RYNG_REDIS_FALLBACK",
        type=_fallback,
        choices=FALLBACKS,
        default="fail",
        help="when Redis cannot be reached at the start or is lost past --redis-max-outage: "
        "fail stops the load (exit 4); local logs a warning and goes on in this process "
        "at --rate-limit / --redis-workers requests per second, this worker's share if "
        "every worker does the same. A refused password is never a reason to fall back",
    )
    env_option(
        group,
        parser,
        "--redis-workers",
        env="RYNG_REDIS_WORKERS",
        type=positive_int,
        metavar="N",
        help="how many workers share --rate-limit, for --redis-fallback local "
        "(default: the N of --shard I/N)",
    )


def redis_limiter(args: argparse.Namespace) -> RedisLimiter | None:
    """The shared limiter ``--redis-url`` asks for, or None without it.

    Raises:
        CliError: ``--redis-url`` without ``--rate-limit``, ``--redis-fallback local``
            without a worker count, or the redis extra missing.
        ConfigurationError: a URL redis-py cannot read, or an empty key.
    """
    if not args.redis_url:
        return None
    if args.rate_limit is None:
        raise CliError(
            "--redis-url needs --rate-limit: the requests per second every worker shares"
        )
    try:
        from ..redis import RedisLimiter
    except ImportError as exc:
        raise CliError(f"--redis-url: {exc}") from None
    key = args.redis_key
    if key is None:
        key = (
            args.subdomain
            or os.environ.get("RYNG_SUBDOMAIN")
            or args.base_url
            or os.environ.get("RYNG_BASE_URL")
            or "ryng"
        )
    options: dict[str, Any] = {}
    if args.redis_max_outage is not None:
        options["max_outage"] = args.redis_max_outage
    if args.redis_fallback == "local":
        workers = args.redis_workers or (args.shard[1] if args.shard else None)
        if workers is None:
            raise CliError(
                "--redis-fallback local needs --redis-workers N or --shard I/N: without "
                "Redis, each worker sends at --rate-limit / N requests per second"
            )
        options.update(fallback="local", expected_workers=workers)
    limiter = RedisLimiter(args.redis_url, key=key, rate=args.rate_limit, **options)
    limiter.fallback_hint = _FALLBACK_HINT
    return limiter
