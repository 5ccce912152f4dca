"""What an ``append`` command line asks for.

The load's options and the campaign's, the ``--max-invalid`` limit, and the checks of the
output paths made before anything is read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from .. import AgentMapping
from ..checkpoint import CheckpointRefusedError
from ._common import CliError
from ._readers import LeadSource, number_normalizer, source_from_args

__all__ = [
    "SHARE_FROM",
    "InvalidGuard",
    "campaign_options",
    "check_rejects",
    "check_report_path",
    "load_options",
    "max_invalid",
    "open_lead_file",
    "other_options_hint",
    "resume_hint",
]


SHARE_FROM = 100
"""--max-invalid N%: the share is checked once this many rows were read (or at the end)."""


def max_invalid(text: str) -> tuple[int | None, float | None]:
    """``"50"`` -> (50, None); ``"5%"`` -> (None, 0.05)."""
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1])
            if not 0 <= share <= 100:
                raise ValueError  # noqa: TRY301 - reported below
            return None, share / 100
        count = int(value)
        if count < 0:
            raise ValueError  # noqa: TRY301 - reported below
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of rows (50) or a share (5%), got {text!r}"
        ) from None
    return count, None


class InvalidGuard:
    """--max-invalid: sets ``stop`` once too many of the rows read are invalid."""

    def __init__(self, limit: tuple[int | None, float | None], stop: asyncio.Event) -> None:
        self.count, self.share = limit
        self.stop = stop
        self.tripped: str | None = None

    def check(self, invalid: int, read: int) -> None:
        if self.tripped is not None:
            return
        if self.count is not None and invalid > self.count:
            self.tripped = f"{invalid:,} invalid rows, more than --max-invalid {self.count:,}"
        elif self.share is not None and read >= SHARE_FROM and invalid > self.share * read:
            self.tripped = (
                f"{invalid:,} of the first {read:,} rows invalid ({invalid / read:.1%}), "
                f"more than --max-invalid {self.share:.1%}"
            )
        if self.tripped is not None:
            self.stop.set()


def _custom_field_names(text: str) -> dict[str, str] | None:
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise CliError(f"--custom-field-names is not valid JSON: {exc}") from None
        if not isinstance(names, dict):
            raise CliError("--custom-field-names must be a JSON object")
        return names
    return {f"customField{i}Name": name.strip() for i, name in enumerate(text.split(","), 1)}


def campaign_options(args: argparse.Namespace, source: LeadSource | None) -> dict[str, Any]:
    """The campaign options of the append, from the flags and the CSV header."""
    agents = None
    if args.agents is not None:
        agents = [agent.strip() for agent in args.agents.split(",") if agent.strip()]
    mapping = args.agent_mapping
    if mapping is None and agents is not None:
        mapping = AgentMapping.GLOBAL.value
    elif mapping is None and source is not None and source.has_agents:
        mapping = AgentMapping.INLINE.value
    if args.custom_field_names is not None:
        names = _custom_field_names(args.custom_field_names)
    else:
        names = None if source is None else source.custom_field_names
    return {
        "name": args.name,
        "agent_mapping": mapping,
        "agents": agents,
        "custom_field_names": names,
        "terminal_callback_url": args.terminal_callback_url,
        "connect_callback_url": args.connect_callback_url,
    }


def load_options(args: argparse.Namespace, source: LeadSource) -> dict[str, Any]:
    """The keyword arguments of `RyngClient.bulk_append` for this command line.

    Options added to the command (a checkpoint) go in here.
    """
    failures = args.max_consecutive_failures
    return {
        "batch_size": args.batch_size,
        "max_batch_bytes": args.max_batch_bytes,
        "concurrency": args.concurrency,
        "rate_limit": args.rate_limit,
        "dedupe": args.dedupe,
        "max_consecutive_failures": failures if failures > 0 else None,
        "checkpoint": args.checkpoint,
        "resend_unknown": args.resend_unknown,
        "shard": args.shard,
        "stop_grace": getattr(args, "stop_grace", None),
        **campaign_options(args, source),
    }


def other_options_hint(exc: Exception, options: dict[str, Any]) -> str:
    """Which options make a resumed run's campaign options differ from its journal's.

    Chosen by what the refusal says differs (``differs``), not by its wording.
    """
    if not isinstance(exc, CheckpointRefusedError) or "options" not in exc.differs:
        return ""
    names = options["custom_field_names"]
    return (
        ". A resumed run sends the first run's campaign options, its custom fields among "
        "them (this run's: " + (", ".join(names.values()) if names else "none") + "): give "
        "it the first run's --columns or --exclude-columns, and its --name, --agents, "
        "--agent-mapping, --custom-field-names and callback URLs"
    )


def resume_hint(args: argparse.Namespace) -> str | None:
    """What to tell an operator after an interrupted load, if it can be resumed."""
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is None:
        return None
    return (
        f"to resume, run the same command again: the checkpoint {str(checkpoint)!r} "
        "holds what was accepted, and only the rest is sent"
    )


def open_lead_file(args: argparse.Namespace) -> LeadSource:
    return source_from_args(args, normalize=number_normalizer(args.default_region))


def check_report_path(path: Path | None, flag: str = "--report") -> None:
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path()
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"{flag} {str(path)!r}: not a writable file path")


def check_rejects(args: argparse.Namespace) -> None:
    if args.rejects is None:
        return
    if args.file == "-":
        raise CliError("--rejects reads the file again to copy its rows: not with stdin ('-')")
    check_report_path(args.rejects, "--rejects")
