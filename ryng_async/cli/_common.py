"""What every command shares: exit codes, options read from ``RYNG_*`` variables, the client.

An option declared with `env_option` takes its value from the command line, else from its
environment variable, else from its default; a bad value names the flag or the variable
it came from. The access token comes from ``RYNG_ACCESS_TOKEN`` or ``--token-file``, never
from a flag: a token on the command line sits in shell history and in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import math
import os
import re
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeAlias

from .. import DEFAULT_TIMEOUT, ConfigurationError, RetryPolicy, RyngClient, RyngError
from ._readers import ENCODING_ERRORS, FORMATS

if TYPE_CHECKING:
    from argparse import _SubParsersAction  # argparse names no public type for it

__all__ = [
    "CliError",
    "Commands",
    "ExitCode",
    "add_column_options",
    "add_connection_options",
    "add_default_region",
    "add_reading_options",
    "column_names",
    "delimiter",
    "env_option",
    "fraction",
    "make_client",
    "non_negative_float",
    "plain",
    "positive_float",
    "positive_int",
    "quiet_stdout",
    "resolve_env",
    "run_async",
    "say",
    "shard",
    "write_stdout",
]


Commands: TypeAlias = "_SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns: where each command module adds its parser."""


class _AddsArguments(Protocol):
    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action: ...


class _AddsGroups(_AddsArguments, Protocol):
    def add_mutually_exclusive_group(self, *, required: bool = ...) -> _AddsArguments: ...


class ExitCode(enum.IntEnum):
    """What a script can trust the exit status to mean."""

    OK = 0
    """Every lead was accepted (or, for a dry run, every row is valid)."""
    NOT_ALL_ACCEPTED = 1
    """Some leads failed, are unknown, were skipped or were invalid."""
    USAGE = 2
    """Bad usage or configuration, or an input that could not be read."""
    AUTH = 3
    """The access token was refused (403)."""
    RESOURCE = 4
    """A resource of the SDK's own failed while the command ran (`ResourceError`): the
    shared rate limit's Redis unreachable or lost, the checkpoint journal's disk full,
    the process out of file descriptors or memory. The settings were right: run the same
    command again once the resource is back."""
    INTERRUPTED = 130
    """Interrupted by Ctrl-C (SIGINT)."""
    PIPE_CLOSED = 141
    """Standard output was closed by its reader (``| head``): the command stopped quietly,
    with the status of a process ended by SIGPIPE."""
    TERMINATED = 143
    """Stopped by SIGTERM."""


class CliError(RyngError):
    """A problem the command reports in one line and exits on (usage, unreadable input).

    Attributes:
        code: the exit code.
    """

    def __init__(self, message: str, *, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


def plain(text: str | None) -> str | None:
    """A docstring as ``--help`` shows it: reST backquotes dropped (``x`` and `x` read x)."""
    if text is None:
        return None
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", text)


def say(message: str, stream: TextIO | None = None) -> None:
    """Write one line for a person (stderr unless told), flushed at once."""
    out = stream if stream is not None else sys.stderr
    out.write(message + "\n")
    out.flush()


def quiet_stdout() -> None:
    """Point standard output at the null device, once its reader has gone.

    What is still buffered, and the interpreter's flush at exit, then go nowhere instead
    of raising `BrokenPipeError` again (Python's documented way for a closed pipe).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def write_stdout(text: str) -> bool:
    """Write and flush ``text`` on standard output; False if its reader has gone.

    A closed pipe is not an error of the command: the rest of its work (a report file,
    its exit code) goes on.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
        return False
    return True


# -- option types --------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def shard(text: str) -> tuple[int, int]:
    """``I/N`` with ``0 <= I < N`` (argparse type)."""
    index, _, count = text.partition("/")
    try:
        value = (int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be I/N, e.g. 0/4, got {text!r}") from None
    if not 0 <= value[0] < value[1]:
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N, got {text!r}")
    return value


def delimiter(text: str) -> str:
    r"""A CSV delimiter (argparse type): one character, or ``\t`` or ``tab`` for a tab.

    The shell passes ``'\t'`` as a backslash and a t, hence the spelled-out forms.
    """
    if text in {"\\t", "tab", "TAB"}:
        return "\t"
    if len(text) != 1:
        raise argparse.ArgumentTypeError(
            f"must be one character, or \\t or tab for a tab, got {text!r}"
        )
    if text in {'"', "\r", "\n"}:
        raise argparse.ArgumentTypeError(f"cannot be a quote or a line break, got {text!r}")
    return text


def column_names(text: str) -> list[str]:
    """Column names, comma-separated (argparse type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected column names, comma-separated, got {text!r}")
    return names


def fraction(text: str) -> float:
    """A number from 0 to 1 (argparse type): a share of requests."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (argparse type)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


# -- options from the environment ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EnvOption:
    dest: str
    env: str
    convert: Callable[[str], Any]
    default: Any


def add_reading_options(group: _AddsGroups) -> None:
    """Add the options that read a lead file as ``append`` read it (defaults as its own)."""
    group.add_argument("--input-format", dest="format", choices=sorted(FORMATS), default=None)
    group.add_argument("--encoding", default="utf-8")
    group.add_argument("--delimiter", type=delimiter, default=None)
    group.add_argument("--number-column", default="number")
    group.add_argument("--agents-column", default="agentsAssigned")
    group.add_argument("--skip-rows", type=non_negative_int, default=0, metavar="N")
    add_column_options(group)


def add_column_options(group: _AddsGroups) -> None:
    """Add ``--columns`` or ``--exclude-columns``, and ``--encoding-errors`` (CSV reading)."""
    chosen = group.add_mutually_exclusive_group()
    chosen.add_argument(
        "--columns",
        type=column_names,
        metavar="A,B",
        help="send only these CSV columns as custom fields, numbered in the file's column "
        "order (case-insensitive; the number and agents columns are always sent)",
    )
    chosen.add_argument(
        "--exclude-columns",
        type=column_names,
        metavar="A,B",
        help="send every CSV column but these as custom fields",
    )
    group.add_argument(
        "--encoding-errors",
        choices=ENCODING_ERRORS,
        default="strict",
        help="a CSV byte the --encoding cannot decode: strict stops, naming its line "
        "(default); replace reads it as U+FFFD and keeps the row",
    )


def add_default_region(group: _AddsArguments, owner: argparse.ArgumentParser, help: str) -> None:
    """Add ``--default-region REGION`` (env ``RYNG_DEFAULT_REGION``, a `number_normalizer`)."""
    env_option(
        group, owner, "--default-region", env="RYNG_DEFAULT_REGION", metavar="REGION", help=help
    )


def env_option(
    parser: _AddsArguments,
    owner: argparse.ArgumentParser,
    *flags: str,
    env: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    help: str,
    **kwargs: Any,
) -> None:
    """Add an option whose value falls back to the environment variable ``env``.

    Args:
        parser: the parser or argument group to add it to.
        owner: the (sub)parser that owns it, where `resolve_env` finds it.
        *flags: the option's flags.
        env: the environment variable read when the flag is not given.
        default: the value when neither is given.
        type: converts the text of the flag or of the variable.
        help: the help text; the variable and the default are appended.
        **kwargs: more `add_argument` arguments (``metavar``, ``choices``).
    """
    shown = "" if default is None else f"; default: {default}"
    action = parser.add_argument(
        *flags, type=type, default=None, help=f"{help} (env {env}{shown})", **kwargs
    )
    registry: list[_EnvOption] | None = owner.get_default("_env_options")
    if registry is None:
        registry = []
        owner.set_defaults(_env_options=registry)
    registry.append(_EnvOption(action.dest, env, type, default))


def resolve_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the options not given on the command line from the environment or defaults."""
    for option in getattr(args, "_env_options", None) or ():
        if getattr(args, option.dest) is not None:
            continue
        raw = os.environ.get(option.env)
        if raw is None or raw == "":
            setattr(args, option.dest, option.default)
            continue
        try:
            setattr(args, option.dest, option.convert(raw))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error(f"environment variable {option.env}={raw!r}: {exc}")


# -- the client ----------------------------------------------------------------------


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add where to send and how: subdomain or base URL, token file, timeout, attempts."""
    group = parser.add_argument_group(
        "connection",
        "The access token is read from RYNG_ACCESS_TOKEN or from --token-file (never from "
        "the command line, where shell history and ps would show it).",
    )
    # Left to RyngClient to read from the environment, so a flag always wins over both
    # variables (RYNG_BASE_URL would otherwise override an explicit --subdomain).
    group.add_argument("--subdomain", help="your account's subdomain (env RYNG_SUBDOMAIN)")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="replaces https://SUBDOMAIN.ryng.in: a proxy, a fake server (env RYNG_BASE_URL)",
    )
    env_option(
        group,
        parser,
        "--token-file",
        env="RYNG_TOKEN_FILE",
        type=Path,
        metavar="PATH",
        help="a file holding the access token (one line)",
    )
    env_option(
        group,
        parser,
        "--timeout",
        env="RYNG_TIMEOUT",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds for one attempt",
    )
    env_option(
        group,
        parser,
        "--max-attempts",
        env="RYNG_MAX_ATTEMPTS",
        type=positive_int,
        default=RetryPolicy().max_attempts,
        metavar="N",
        help="attempts per request, the first included (1: no retries)",
    )


def _read_token(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CliError(f"cannot read the token file {str(path)!r}: {reason}") from None
    token = text.strip()
    if not token:
        raise CliError(f"the token file {str(path)!r} is empty")
    if "\n" in token:
        raise CliError(f"the token file {str(path)!r} holds more than one line")
    return token


def make_client(args: argparse.Namespace, **kwargs: Any) -> RyngClient:
    """Build the client from the connection options (and the ``RYNG_*`` variables).

    Raises:
        CliError: a token file that cannot be read.
        ConfigurationError: a missing or malformed setting (exit 2).
    """
    token = None if args.token_file is None else _read_token(args.token_file)
    if token is None and not os.environ.get("RYNG_ACCESS_TOKEN"):
        raise ConfigurationError("no access token: set RYNG_ACCESS_TOKEN or pass --token-file PATH")
    if (
        args.base_url is None
        and args.subdomain is None
        and not os.environ.get("RYNG_BASE_URL")
        and not os.environ.get("RYNG_SUBDOMAIN")
    ):
        raise ConfigurationError(
            "no account: set RYNG_SUBDOMAIN (or pass --subdomain), or RYNG_BASE_URL"
        )
    return RyngClient(
        subdomain=args.subdomain,
        access_token=token,
        base_url=args.base_url,
        timeout=args.timeout,
        retry=kwargs.pop("retry", None) or RetryPolicy(max_attempts=args.max_attempts),
        **kwargs,
    )


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command's coroutine; Ctrl-C that reaches here exits 130."""
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
