"""The documentation site's pages (docs/) and the README cannot rot.

* Every ``python`` block runs: the blocks of one page in order, in one namespace, with
  ``await`` allowed at the top level, against a ``FakeRyngServer`` (the ``RYNG_*``
  variables point ``RyngClient()`` at it), in a temporary directory holding the files the
  pages name. The namespace starts with what the pages take as given: ``client`` (a
  ``RyngClient`` on the fake server), ``rows`` and ``read_rows()`` (twelve valid leads as
  wire-form mappings, a CRM id in ``customField3``), ``request_body`` (the vendor's connect
  callback example) and ``worker, workers``. A block without a top-level ``await`` runs in
  a worker thread, as synchronous code (``ryng_async.sync``) would. The few lines that
  cannot run here (a server that runs until stopped, a Redis host of the reader's) are
  replaced as ``SUBSTITUTIONS`` says, and each of those must still be in the pages.
* Every ``ryng-async`` command line in a ``bash`` or ``console`` block parses with the
  command line's own parser, and every option of every command is on the CLI page.
* Every page is in the site's navigation, every guide is linked from the README.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import fnmatch
import importlib.util
import inspect
import os
import re
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_callback_events import CONNECT_EXAMPLE

import ryng_async
from ryng_async import RyngClient
from ryng_async.testing import FakeRyngServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TOKEN = "docs-token"

PAGES = sorted(DOCS.glob("*.md"))
_BLOCK = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```", re.M | re.S)

# Lines a page shows that cannot run in a test, and what runs in their place.
SUBSTITUTIONS: dict[str, dict[str, str]] = {
    "callbacks.md": {
        # serves until stopped: the same app is made and started on a free port, then closed
        "web.run_app(app, port=8080, access_log_class=RedactingAccessLogger)": (
            "runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)\n"
            # the store's file, as the app's first callback would open it
            "await store.open()\nawait store.aclose()"
        ),
    },
    "service.md": {
        "start_http_server(9100)": "start_http_server(0, addr='127.0.0.1')",
        # the default registry is the process's: each run of the page gets its own
        "PrometheusObserver()": (
            "PrometheusObserver(registry=__import__('prometheus_client').CollectorRegistry())"
        ),
    },
    "scaling.md": {
        # the reader's Redis: the tests' own (.ci/run starts one), else the block is skipped
        "redis://redis.internal:6379/0": os.environ.get("RYNG_TEST_REDIS_URL", ""),
    },
}


def blocks(path: Path, *langs: str) -> list[tuple[int, str]]:
    """The code blocks of ``path`` in ``langs``, each with the line its code starts on."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start("code")) + 1, match["code"])
        for match in _BLOCK.finditer(text)
        if match["lang"] in langs
    ]


def _compile(code: str, where: str) -> Any:
    return compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def _rows() -> list[dict[str, Any]]:
    return [
        {"number": f"+91987654{i:04d}", "customField1": f"Lead {i}", "customField3": f"crm-{i}"}
        for i in range(12)
    ]


def _given_files(directory: Path) -> None:
    """The files the pages read, made in the page's working directory."""
    lines = ["number,name,crm_id"] + [f"+91987654{i:04d},Lead {i},crm-{i}" for i in range(12)]
    (directory / "leads.csv").write_text("\n".join(lines) + "\n")
    (directory / "callback-secret").write_text(secrets.token_urlsafe(32) + "\n")
    import polars as pl

    pl.read_csv(directory / "leads.csv").write_parquet(directory / "leads.parquet")


def _substitutions(path: Path) -> dict[str, str]:
    if path == README:  # the README may show any page's example
        return {old: new for page in SUBSTITUTIONS.values() for old, new in page.items()}
    return dict(SUBSTITUTIONS.get(path.name, {}))


async def _run_page(path: Path, directory: Path) -> dict[str, Any]:
    substitutions = _substitutions(path)
    expected = set(substitutions) if path != README else set()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        os.environ["RYNG_BASE_URL"] = server.base_url  # for RyngClient() with no arguments
        namespace: dict[str, Any] = {
            "__name__": "__docs__",
            "client": client,
            "rows": _rows(),
            "read_rows": lambda *_: iter(_rows()),
            "request_body": CONNECT_EXAMPLE,
            "token": TOKEN,
            "worker": 0,
            "workers": 1,
        }
        made: list[RyngClient] = []

        class RecordedClient(RyngClient):
            """The pages' clients, recorded to be closed if a page leaves one open."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        ryng_async.RyngClient = RecordedClient  # type: ignore[misc]
        try:
            for line, shown in blocks(path, "python"):
                code = shown
                for old, new in list(substitutions.items()):
                    if old in code:
                        code = code.replace(old, new)
                        del substitutions[old]
                compiled = _compile(code, f"{path.name}:{line}")
                if compiled.co_flags & inspect.CO_COROUTINE:
                    await eval(compiled, namespace)  # noqa: S307 - the page's own code
                else:
                    await asyncio.to_thread(exec, compiled, namespace)
        finally:
            ryng_async.RyngClient = RyngClient  # type: ignore[misc]
            for made_client in made:  # clients a page made and left open
                await made_client.aclose()
            runner = namespace.get("runner")
            if runner is not None:
                await runner.cleanup()
        namespace["_leads_received"] = server.lead_count()
    unused = expected & set(substitutions)
    assert not unused, f"{path.name} no longer has: {sorted(unused)}"
    return namespace


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RYNG_") and name != "RYNG_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RYNG_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("RYNG_BASE_URL", "http://127.0.0.1:1")  # the fake server's, once it runs
    _given_files(tmp_path)
    return tmp_path


def _pages_with_python() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in [*PAGES, README] if blocks(path, "python")]


@pytest.mark.parametrize("path", _pages_with_python())
def test_every_python_block_of_the_page_runs(path: Path, page_env: Path) -> None:
    needs_redis = "redis.internal" in path.read_text()
    if needs_redis and not os.environ.get("RYNG_TEST_REDIS_URL"):
        pytest.skip("RedisLimiter needs a Redis: RYNG_TEST_REDIS_URL (.ci/run sets it)")

    namespace = asyncio.run(_run_page(path, page_env))
    assert namespace["_leads_received"] > 0 or path.name in _PAGES_SENDING_NOTHING, (
        f"{path.name}: its blocks sent no lead to the fake server"
    )


# Pages whose blocks do not load leads through the test's server (they parse, define an
# app, or run a server of their own).
_PAGES_SENDING_NOTHING = {"getting-started.md", "README.md", "testing.md"}


def test_a_block_that_raises_fails_the_page(tmp_path: Path, page_env: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("```python\nawait client.append('42', [{'number': '12'}])\n```\n")
    with pytest.raises(Exception, match="number"):
        asyncio.run(_run_page(page, tmp_path))


# -- command lines ---------------------------------------------------------------------------


def _commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, split at ``;``, ``&``, ``&&``, ``|``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if set(token) <= set(";&|"):
            yield words
            words = []
        else:
            words.append(token)
    yield words


def _command_lines(path: Path) -> list[tuple[str, list[str]]]:
    """Each ``ryng-async ...`` invocation in the page's shell blocks, as its arguments."""
    found = []
    for line, code in blocks(path, "bash", "console", "sh"):
        for offset, text in enumerate(code.replace("\\\n", " ").splitlines()):
            if not text.startswith(("$ ", "ryng-async", "python", "RYNG_", "export")):
                continue  # a command's output
            for words in _commands(text.removeprefix("$ ")):
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words.pop(0)  # VAR=value before the command
                if words[:1] == ["ryng-async"]:
                    args = words[1:]
                elif words[:3] == ["python", "-m", "ryng_async"]:
                    args = words[3:]
                else:
                    continue
                if ">" in args:  # a redirection and its file
                    args = args[: args.index(">")]
                found.append((f"{path.name}:{line + offset}", args))
    return found


def _parser() -> argparse.ArgumentParser:
    from ryng_async.cli import build_parser

    return build_parser()


def test_every_command_line_in_the_pages_parses() -> None:
    parser = _parser()
    lines = [found for path in [*PAGES, README] for found in _command_lines(path)]
    assert len(lines) >= 5
    bad = []
    for where, args in lines:
        try:
            parser.parse_args(args)
        except SystemExit:
            bad.append((where, args))
    assert not bad, f"command lines the CLI refuses: {bad}"


def _cli_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_hook", DOCS / "hooks" / "cli.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_and_option_is_on_the_cli_page() -> None:
    hook = _cli_hook()
    page = (DOCS / "cli.md").read_text()
    assert hook.MARKER in page
    rendered = page.replace(hook.MARKER, hook.reference())
    missing = []
    for command, sub in hook.commands(_parser()):
        prose = page.split(hook.MARKER)[0]
        if f"`{command.split()[0]}" not in prose and f"ryng-async {command}" not in prose:
            missing.append(f"{command} (not in the page's text)")
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in rendered:
                    missing.append(f"{command} {option}")
    assert len(list(hook.commands(_parser()))) >= 8
    assert not missing, f"not on docs/cli.md: {missing}"


def test_the_cli_page_gives_every_exit_code() -> None:
    from ryng_async.cli._common import ExitCode

    page = (DOCS / "cli.md").read_text()
    rows = set(re.findall(r"^\| ([\d /]+) \|", page, re.M))
    codes = {int(code) for row in rows for code in row.split("/")}
    assert {int(code) for code in ExitCode} <= codes


# -- the site's structure ----------------------------------------------------------------------


def _nav_files() -> set[str]:
    return set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))


def test_every_page_is_in_the_navigation() -> None:
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert pages == _nav_files()


# -- the guarantees ----------------------------------------------------------------------------


def _test_names() -> dict[str, set[str]]:
    """Each test file of tests/ and the test functions it defines."""
    return {
        path.name: set(re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(), re.M))
        for path in (ROOT / "tests").glob("test_*.py")
    }


def test_every_test_the_guarantees_name_exists() -> None:
    page = (DOCS / "guarantees.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`test_" in line]
    assert len(rows) >= 15
    tests = _test_names()
    every = set().union(*tests.values())
    missing = []
    for row in rows:
        proof = row.rsplit("|", 2)[-2]  # the "proved by" cell
        for span in re.findall(r"`([^`]+)`", proof):
            file, _, name = span.partition("::")
            if file.startswith("test_") and file.endswith(".py"):
                if file not in tests or (name and not fnmatch.filter(tests[file], name)):
                    missing.append(span)
            elif span.startswith("test_") and not fnmatch.filter(every, span):
                missing.append(span)
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"


def test_the_readme_links_every_guide() -> None:
    readme = README.read_text()
    unlinked = [
        path.name for path in PAGES if path.name != "index.md" and f"docs/{path.name}" not in readme
    ]
    assert not unlinked, f"README.md does not link: {unlinked}"
