"""Smoke test: every benchmark runs end to end at a tiny size (its numbers mean nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

for _extra in ("httpx", "orjson", "matplotlib", "psutil"):
    pytest.importorskip(_extra)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmarks_quick_run_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed module, a tmp dir
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("RESULTS.md", "results.json", "throughput.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_versus_runs_each_version_alternating_and_compares_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed module, a tmp dir
        [
            sys.executable,
            "-m",
            "benchmarks.versus",
            "--version",
            f"before={ROOT}",
            "--version",
            f"after={ROOT}",
            "--only",
            "encoding",
            "--times",
            "2",
            "--quick",
            "--own-benchmarks",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    order = [line for line in done.stdout.splitlines() if line.startswith("run ")]
    assert order == ["run 1/2: before", "run 1/2: after", "run 2/2: after", "run 2/2: before"]
    assert "## encoding" in done.stdout
    assert " → " in done.stdout
    for run in ("before-1", "before-2", "after-1", "after-2"):
        assert (out / run / "results.json").is_file(), run


def test_versus_cells_are_medians_of_each_number(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import versus

    def result(cell: str) -> dict[str, object]:
        table = {"title": "t", "columns": ["name", "value"], "rows": [["row", cell]]}
        return {"bench": {"tables": [table]}}

    runs = {
        # Means would differ (4.0 / 40.0 and 7.0 / 11.0): these are medians.
        "before": [result("1.0 / 10"), result("9.0 / 90"), result("2.0 / 20")],
        "after": [result("4.0 / 1"), result("12.0 / 30"), result("5.0 / 2")],
    }
    versus._compare(["before", "after"], runs)
    assert "| row | 2.00 / 20.00 → 5.00 / 2.00 (2.50x) |" in capsys.readouterr().out
