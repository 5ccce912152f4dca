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
