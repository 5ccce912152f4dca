"""The command line: the demo is the README's first command and must keep working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ryng_async import cli


def test_demo_reads_as_success_and_explains_the_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["demo", "--leads", "60000", "--no-progress", "--latency", "0"])
    out = capsys.readouterr().out
    assert code == 0
    first_result_line = next(line for line in out.splitlines() if line.startswith("Success"))
    assert "all 60,000 leads are accounted for" in first_result_line
    assert "the server's record agrees" in first_result_line
    # The two planted invalid leads are named as such, with their positions.
    assert "2 invalid: the planted bad numbers, all caught before sending" in out
    assert "leads #24999, #49999" in out
    assert "What each fault did:" in out
    assert "NOT ok" not in out.split("The SDK's own one-line report")[0]


def test_demo_json_report_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["demo", "--leads", "5000", "--no-progress", "--json", "--fault-rate", "0.3"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)  # stdout holds the JSON report alone
    parts = ("accepted", "failed", "unknown", "skipped", "invalid")
    assert report["total"] == 5000 == sum(report[k] for k in parts)
    assert report["finished"] is True


def test_demo_progress_shows_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--leads", "2000", "--batch-size", "100", "--progress", "log"]) == 0
    captured = capsys.readouterr()
    assert "read 2,000 (100%)" in captured.out
    assert "accounted for" in captured.out


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--leads", "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_help_lists_every_command_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "append", "upload-sheet", "fake-server"):
        assert command in out
    assert "3 the token was refused" in " ".join(out.split())


def test_append_help_names_the_environment_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["append", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for variable in ("RYNG_BATCH_SIZE", "RYNG_CONCURRENCY", "RYNG_TOKEN_FILE", "RYNG_BASE_URL"):
        assert variable in out
    assert "--token " not in out  # the token never comes from a flag


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["append"],
        ["upload-sheet"],
        ["checkpoint", "show"],
        ["fake-server"],
        ["callbacks", "serve"],
        ["callbacks", "export"],
        ["reconcile"],
        ["demo"],
    ],
    ids=lambda command: " ".join(command) or "ryng-async",
)
def test_help_reads_as_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert "usage:" in out
    assert "`" not in out  # the docstrings' reST quotes are dropped


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ryng_async", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("ryng-async ")


def test_console_script_runs_the_demo(tmp_path: Path) -> None:
    script = shutil.which("ryng-async", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the console script is not installed next to this interpreter")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    result = subprocess.run(  # noqa: S603 - our own console script
        [script, "demo", "--leads", "3000", "--latency", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Success: all 3,000 leads are accounted for" in result.stdout
