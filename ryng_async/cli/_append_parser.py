"""The ``append`` command's arguments: input, campaign, load and output options."""

from __future__ import annotations

from pathlib import Path

from .. import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    AgentMapping,
)
from ._append import run
from ._append_options import SHARE_FROM, max_invalid
from ._common import (
    Commands,
    add_column_options,
    add_connection_options,
    add_default_region,
    delimiter,
    env_option,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    shard,
)
from ._readers import FORMATS
from ._shared_rate import add_redis_options

__all__ = ["add_parser"]


def add_parser(commands: Commands) -> None:
    """Add ``append`` to the command line."""
    parser = commands.add_parser(
        "append",
        help="load a CSV or JSON Lines file of leads into a campaign",
        description=(
            "Load a CSV or JSON Lines file into a campaign, in concurrent, rate-limited "
            "batches, with live progress, a summary, and an exit code scripts can trust: "
            "0 every lead accepted; 1 some failed, unknown or invalid; 2 usage, "
            "configuration or unreadable input; 3 the token was refused; 4 a resource "
            "failed while it ran (Redis unreachable or lost, the journal's disk full, out of "
            "file descriptors); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
        ),
        epilog=(
            "CSV: a header row; the number column (--number-column; spaces around a "
            "number are dropped), an optional agents column (--agents-column, usernames "
            "separated by ';' or '|'), and every other column (or those --columns names, "
            "or all but --exclude-columns) a custom field in column order, its header sent "
            "as the field's name (customField1Name is the first other column's header, and "
            "so on). JSON Lines: "
            "one lead a line in the API's wire form (spaces around its number dropped), e.g. "
            '{"number": "+919876543210", "agentsAssigned": ["a@x.com"], '
            '"customField1": "Max"}. Invalid rows are reported with their line numbers '
            "and the rest is loaded."
        ),
    )
    parser.set_defaults(run=run)
    parser.add_argument("campaign", metavar="CAMPAIGN", help="the campaign id")
    parser.add_argument("file", metavar="FILE", help="the lead file; '-' reads stdin")

    source = parser.add_argument_group("input")
    source.add_argument(
        "--format",
        choices=FORMATS,
        help="the file's format (default: from its extension: .csv/.tsv or .jsonl/.ndjson, "
        "optionally .gz; on stdin, from its first character)",
    )
    source.add_argument(
        "--encoding", default="utf-8", help="the CSV's text encoding (default: utf-8)"
    )
    source.add_argument(
        "--delimiter",
        type=delimiter,
        help="the CSV's delimiter: one character, or \\t or tab for a tab (default: ',', or "
        "a tab for .tsv)",
    )
    source.add_argument(
        "--number-column",
        default="number",
        metavar="NAME",
        help="the CSV column of phone numbers (default: number; case-insensitive)",
    )
    source.add_argument(
        "--agents-column",
        default="agentsAssigned",
        metavar="NAME",
        help="the CSV column of agent usernames (default: agentsAssigned)",
    )
    source.add_argument(
        "--skip-rows",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="skip N lines above the header (title lines); line numbers still count them",
    )
    add_column_options(source)
    add_default_region(
        source,
        parser,
        "normalize numbers to E.164 with libphonenumber, reading national formats "
        "(09876543210, 98765 43210) as this region's (IN, US...); needs the phone extra",
    )

    campaign = parser.add_argument_group("campaign")
    campaign.add_argument("--name", help="the campaign name Ryng shows for this append")
    campaign.add_argument(
        "--agent-mapping",
        choices=[m.value for m in AgentMapping],
        help="how calls are assigned to agents (default: global with --agents, inline when "
        "the CSV has an agents column, else Ryng's all-agents)",
    )
    campaign.add_argument(
        "--agents", metavar="A,B", help="agent usernames, comma-separated (agent mapping global)"
    )
    campaign.add_argument(
        "--custom-field-names",
        metavar="NAMES",
        help="the custom fields' names, comma-separated in field order, or a JSON object "
        '({"customField1Name": "Name"}); overrides the CSV header; "" sends none',
    )
    campaign.add_argument("--terminal-callback-url", metavar="URL")
    campaign.add_argument("--connect-callback-url", metavar="URL")

    load = parser.add_argument_group("load")
    env_option(
        load,
        parser,
        "--batch-size",
        env="RYNG_BATCH_SIZE",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="most leads per request",
    )
    env_option(
        load,
        parser,
        "--max-batch-bytes",
        env="RYNG_MAX_BATCH_BYTES",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_BYTES,
        metavar="BYTES",
        help="most bytes per request body",
    )
    env_option(
        load,
        parser,
        "--concurrency",
        env="RYNG_CONCURRENCY",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="most requests in flight",
    )
    env_option(
        load,
        parser,
        "--rate-limit",
        env="RYNG_RATE_LIMIT",
        type=positive_float,
        metavar="PER_SECOND",
        help="most requests per second (default: none; a 429 still slows the load)",
    )
    add_redis_options(load, parser)
    load.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
        metavar="N",
        help="stop after N batches in a row are not accepted; 0 never stops "
        f"(default: {DEFAULT_MAX_CONSECUTIVE_FAILURES})",
    )
    load.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="an SQLite journal (made if missing): run the same command again after a "
        "crash or Ctrl-C and only what was not accepted is sent",
    )
    load.add_argument(
        "--resend-unknown",
        action="store_true",
        help="with --checkpoint: send again the batches in flight when an earlier run "
        "stopped (they may already be in Ryng: check them first)",
    )
    load.add_argument(
        "--shard",
        type=shard,
        metavar="I/N",
        help="send only shard I of N (from 0) of the file; N workers with the same file and "
        "I = 0..N-1 send it exactly once (give each its own --checkpoint)",
    )
    env_option(
        load,
        parser,
        "--stop-grace",
        env="RYNG_STOP_GRACE",
        type=non_negative_float,
        metavar="SECONDS",
        help="after a first Ctrl-C or SIGTERM, nothing new is sent and the requests in "
        "flight get this long to end before they are cancelled (a second signal cancels "
        "them at once; default: --timeout)",
    )
    load.add_argument(
        "--dedupe",
        action="store_true",
        help="refuse, as invalid, a lead whose number came earlier in the file",
    )
    load.add_argument(
        "--max-invalid",
        type=max_invalid,
        default=None,
        metavar="N|N%",
        help="stop before sending anything more once more than N rows (or N%% of the rows "
        f"read, checked from the {SHARE_FROM}th row on) are invalid: a file read with the "
        "wrong settings is refused rather than sent (exit 1)",
    )
    load.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="read only the first N data rows (a trial run)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--dry-run",
        action="store_true",
        help="read and validate only: print every invalid row to standard output, one a "
        "line as FILE:LINE: FIELD: REASON (the dry run's product, ready for grep), send "
        "nothing; exit 0 when every row is valid (no token needed)",
    )
    output.add_argument(
        "--report", type=Path, metavar="PATH", help="write the whole report here as JSON"
    )
    output.add_argument(
        "--rejects",
        type=Path,
        metavar="PATH",
        help="write every invalid row here as it was read (the header first, same columns "
        "and bytes) plus 'line' and 'reason' columns (JSON Lines input: one object a row "
        "with line, reason and the row's text); not with stdin",
    )
    output.add_argument(
        "--show-invalid",
        type=int,
        default=20,
        metavar="N",
        help="invalid rows listed on standard error at the end of a load, where standard "
        "output carries the summary (default: 20; --dry-run lists all)",
    )
    env_option(
        output,
        parser,
        "--progress",
        env="RYNG_PROGRESS",
        choices=["auto", "bar", "log", "none"],
        default="auto",
        help="a live bar on a terminal, else a log line every --progress-interval seconds",
    )
    env_option(
        output,
        parser,
        "--progress-interval",
        env="RYNG_PROGRESS_INTERVAL",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress log lines",
    )
    env_option(
        output,
        parser,
        "--log-format",
        env="RYNG_LOG_FORMAT",
        choices=["text", "json"],
        default="text",
        help="progress lines and the summary as text or as JSON lines (for log collectors)",
    )
    add_connection_options(parser)
