"""``python -m benchmarks``: run the benchmarks, print tables, write the results.

``--quick`` runs each at a tiny size (a smoke test; its numbers mean nothing) and writes to
a temporary directory unless ``--out`` is given. ``--only NAME`` (repeatable) runs some;
the others keep their last results in ``results.json``, and ``RESULTS.md`` and
``throughput.png`` are regenerated from the whole file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from . import _report
from ._harness import HERE, Context, load_results, machine_info, print_result, save_results

# Run in this order; any other bench_*.py module runs after them, by name.
ORDER = ("encoding", "throughput", "latency", "rate", "memory")


def discover() -> dict[str, ModuleType]:
    """Every ``bench_*`` module, by its ``NAME``, in run order."""
    modules = {}
    for info in pkgutil.iter_modules([str(HERE)]):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"{__package__}.{info.name}")
            modules[module.NAME] = module
    ranked = sorted(modules, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return {name: modules[name] for name in ranked}


def main(argv: list[str] | None = None) -> int:
    benchmarks = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument(
        "--only", action="append", choices=list(benchmarks), metavar="NAME", help="repeatable"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override every benchmark's")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild RESULTS.md and the plot, run nothing"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, module in benchmarks.items():
            print(f"{name:12s} {module.TITLE}")
        return 0

    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="ryng-bench-quick-")) if args.quick else HERE
    ctx = Context(quick=args.quick, rounds=args.rounds, out_dir=out)
    selected = [] if args.report_only else args.only or list(benchmarks)
    results_path = out / "results.json"
    results = load_results(results_path)
    if selected or not results.get("machine"):
        results["machine"] = machine_info()
    results.setdefault("benchmarks", {})
    started = time.perf_counter()
    for name in selected:
        print(f"running {name} ...", flush=True)
        began = time.perf_counter()
        load_before = os.getloadavg()[0]
        result = benchmarks[name].run(ctx)
        result.seconds = time.perf_counter() - began
        result.quick = ctx.quick
        result.notes.append(
            f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
            "(this benchmark's own processes included)."
        )
        print_result(result)
        results["benchmarks"][name] = result.to_dict()
        save_results(results_path, results)  # keep what is done if a later one fails
    order = [n for n in benchmarks if n in results["benchmarks"]]
    results["benchmarks"] = {n: results["benchmarks"][n] for n in order}
    save_results(results_path, results)
    plot = _report.write_plot(results, out / "throughput.png")
    _report.write_markdown(results, out / "RESULTS.md", plot=plot)
    total = time.perf_counter() - started
    print(f"\nwrote {results_path}, {out / 'RESULTS.md'}" + (f", {plot}" if plot else ""))
    print(f"total {total:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
