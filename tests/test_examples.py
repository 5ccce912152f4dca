"""Every script in examples/ runs as is (against the fake server it starts), so none rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Scripts that take long by design (a million leads): run with the slow tests.
SLOW = {"bulk_from_generator.py"}
# The exit status of an example that could not run here (fleet_dask.py without Dask,
# redis-py or a Redis): a skip, not a pass. In CI, where .ci/run provides Redis
# (RYNG_TEST_REDIS_URL) and installs Dask, a skip is a failure.
SKIPPED = 77


def _params() -> list[object]:
    return [
        pytest.param(path, id=path.name, marks=[pytest.mark.slow] if path.name in SLOW else [])
        for path in sorted(EXAMPLES.glob("*.py"))
    ]


def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.py"))) >= 5


@pytest.mark.parametrize("script", _params())
def test_example_runs(script: Path, tmp_path: Path) -> None:
    # Without RYNG_* variables every example uses its in-process fake server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and example scripts
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    if done.returncode == SKIPPED:
        reason = f"{script.name}: {done.stdout.strip()[-500:]}"
        if os.environ.get("RYNG_TEST_REDIS_URL"):
            pytest.fail(f"skipped where Redis and Dask are provided: {reason}")
        pytest.skip(reason)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
