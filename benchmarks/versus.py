"""``python -m benchmarks.versus``: the same benchmarks against two versions of the SDK.

A before/after of a change, measured the way the other comparisons are: in one run, the
versions alternating (before, after, then after, before, ...), each run in a fresh process
with the same interpreter and the same benchmark code; only the ``ryng_async`` package
differs (``--own-benchmarks``: each runs its checkout's own benchmark code too, for a
benchmark that reaches into private modules). Each version is a checkout (a git
worktree), given as ``LABEL=PATH``::

    git worktree add /tmp/before <commit>
    python -m benchmarks.versus --version before=/tmp/before --version after=. \\
        --only throughput --only checkpoint --times 2

Every numeric cell of every table is reported as the median over the runs of each version,
then the last version over the first. The raw results stay in ``--out`` (one directory per
run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._harness import HERE

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def _stage(label: str, checkout: Path, root: Path, *, own: bool) -> Path:
    """A directory whose ``ryng_async`` is the checkout's, its ``benchmarks`` ours or its own."""
    package = checkout / "ryng_async"
    if not (package / "__init__.py").is_file():
        raise SystemExit(f"--version {label}={checkout}: no ryng_async package there")
    stage = root / f"stage-{label}"
    stage.mkdir()
    (stage / "ryng_async").symlink_to(package.resolve())
    benchmarks = (checkout / "benchmarks").resolve() if own else HERE
    if not (benchmarks / "__main__.py").is_file():
        raise SystemExit(f"--version {label}={checkout}: no benchmarks package there")
    # A copy, not a link: benchmarks start their child processes in the folder above their
    # own (resolved) one, whose ryng_async would then come first on the path.
    shutil.copytree(
        benchmarks,
        stage / "benchmarks",
        ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.png", "*.md"),
    )
    return stage


def _run(
    stage: Path, only: list[str], rounds: int | None, out: Path, *, quick: bool = False
) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks", "--out", str(out)]
    if quick:
        command.append("--quick")
    for name in only:
        command += ["--only", name]
    if rounds is not None:
        command += ["--rounds", str(rounds)]
    env = dict(os.environ, PYTHONPATH=str(stage))
    subprocess.run(command, cwd=stage, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out / "results.json") as file:
        results: dict[str, Any] = json.load(file)["benchmarks"]
    return results


def _numbers(cell: object) -> list[float]:
    return [float(text.replace(",", "")) for text in _NUMBER.findall(str(cell))]


def _cell(values: list[list[float]]) -> str:
    """Medians of each number in the cell across runs, joined as the cell joined them."""
    if not values or not all(values) or len({len(v) for v in values}) != 1:
        return "-"
    medians = [statistics.median(run[i] for run in values) for i in range(len(values[0]))]
    return " / ".join(f"{m:,.2f}" if abs(m) < 100 else f"{m:,.0f}" for m in medians)


def _compare(labels: list[str], runs: dict[str, list[dict[str, Any]]]) -> None:
    first, last = labels[0], labels[-1]
    for name in runs[first][0]:
        print(f"\n## {name}")
        for t, table in enumerate(runs[first][0][name]["tables"]):
            print(f"\n### {table['title']}")
            print("| " + " | ".join(table["columns"]) + " |")
            print("|" + "---|" * len(table["columns"]))
            for r, row in enumerate(table["rows"]):
                cells = [str(row[0])]
                for c in range(1, len(row)):
                    shown = []
                    for label in labels:
                        values = []
                        for result in runs[label]:
                            try:
                                values.append(_numbers(result[name]["tables"][t]["rows"][r][c]))
                            except (KeyError, IndexError):
                                values.append([])
                        shown.append(_cell(values))
                    before, after = (_numbers(shown[0]), _numbers(shown[-1]))
                    change = ""
                    if before and after and before[0]:
                        change = f" ({after[0] / before[0]:.2f}x)"
                    cells.append(" → ".join(shown) + change)
                print("| " + " | ".join(cells) + " |")
    print(f"\n(each cell: median of the runs of {' → '.join(labels)}; ({last} / {first}))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__)
    parser.add_argument("--version", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--only", action="append", required=True, metavar="NAME")
    parser.add_argument("--times", type=int, default=2, help="runs of each version")
    parser.add_argument("--rounds", type=int, default=None, help="passed to each run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument(
        "--own-benchmarks",
        action="store_true",
        help="each version runs its own checkout's benchmarks (for benchmark code that "
        "follows the SDK's private modules, such as encoding's)",
    )
    args = parser.parse_args(argv)
    versions = dict(item.split("=", 1) for item in args.version)
    if len(versions) < 2:
        parser.error("give at least two --version LABEL=PATH")
    out = args.out or Path(tempfile.mkdtemp(prefix="ryng-versus-"))
    out.mkdir(parents=True, exist_ok=True)
    labels = list(versions)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as root:
        stages = {
            label: _stage(label, Path(path), Path(root), own=args.own_benchmarks)
            for label, path in versions.items()
        }
        for time_index in range(args.times):
            shift = time_index % len(labels)
            for label in labels[shift:] + labels[:shift]:
                print(f"run {time_index + 1}/{args.times}: {label}", flush=True)
                result_dir = out / f"{label}-{time_index + 1}"
                runs[label].append(
                    _run(stages[label], args.only, args.rounds, result_dir, quick=args.quick)
                )
    _compare(labels, runs)
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
