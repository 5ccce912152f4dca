"""The command line: the demo is the README's first command and must keep working."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ryng_async import cli


def test_demo_accounts_for_every_lead(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["demo", "--leads", "30000", "--no-progress", "--latency", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "30,000 read" in out
    assert "the server's record agrees" in out
    # One invalid synthetic lead every 25,000: reported with its position.
    assert "invalid lead #24999: number:" in out


def test_demo_json_report_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code = cli.main(["demo", "--leads", "5000", "--no-progress", "--json", "--fault-rate", "0.3"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)  # stdout holds the JSON report alone
    parts = ("accepted", "failed", "unknown", "skipped", "invalid")
    assert report["total"] == 5000 == sum(report[k] for k in parts)
    assert report["finished"] is True


def test_demo_with_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--leads", "2000", "--batch-size", "100"]) == 0
    assert "accounted" in capsys.readouterr().out


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--leads", "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


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
