"""MkDocs hook: the command line page ends with every command's ``--help``, as built.

The page holds the marker ``<!-- CLI-REFERENCE -->``; at build time it becomes one
section per command with the text its parser prints for ``--help``, so every option the
code has is on the page, in the code's words (``tests/test_docs.py`` checks this too).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- CLI-REFERENCE -->"
PAGE = "cli.md"
WIDTH = "88"  # argparse wraps help to $COLUMNS: the same page on every machine


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each command (``append``, ``callbacks serve``, ...) and its parser, in order."""
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield f"{prefix}{name}", sub
                yield from commands(sub, f"{prefix}{name} ")


def reference() -> str:
    """The markdown of every command's help, each under its own heading."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from ryng_async.cli import build_parser

        parser = build_parser()
        parts = [f"### `ryng-async`\n\n```text\n{parser.format_help().rstrip()}\n```\n"]
        for name, sub in commands(parser):
            parts.append(f"### `ryng-async {name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Put the commands' help where the marker is on the command line page."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker")
    return markdown.replace(MARKER, reference())
