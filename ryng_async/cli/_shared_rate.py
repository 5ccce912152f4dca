"""``append --redis-url``: one rate limit shared through Redis by every worker of a load.

N workers running ``append --shard I/N`` with their own ``--rate-limit`` would send N times
the account's rate; with ``--redis-url`` they take their requests from one schedule held
in Redis (`ryng_async.redis.RedisLimiter`), ``--rate-limit`` requests per second in all.
Redis unreachable or lost stops the load (exit 4, `ExitCode.RESOURCE`), never an
unlimited send.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ._common import CliError, env_option, non_negative_float

if TYPE_CHECKING:
    from ..redis import RedisLimiter

__all__ = ["add_redis_options", "redis_limiter"]


def add_redis_options(group: Any, parser: argparse.ArgumentParser) -> None:
    """Add ``--redis-url``, ``--redis-key`` and ``--redis-max-outage`` to ``group``."""
    env_option(
        group,
        parser,
        "--redis-url",
        env="RYNG_REDIS_URL",
        metavar="URL",
        help="share --rate-limit with every worker naming the same --redis-key on this "
        "Redis (redis://host:6379/0; needs the redis extra); Redis unreachable or lost "
        "stops the load with exit 4",
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


def redis_limiter(args: argparse.Namespace) -> RedisLimiter | None:
    """The shared limiter ``--redis-url`` asks for, or None without it.

    Raises:
        CliError: ``--redis-url`` without ``--rate-limit``, or the redis extra missing.
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
    if args.redis_max_outage is None:
        return RedisLimiter(args.redis_url, key=key, rate=args.rate_limit)
    return RedisLimiter(
        args.redis_url, key=key, rate=args.rate_limit, max_outage=args.redis_max_outage
    )
