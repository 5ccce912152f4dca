"""The small harness every benchmark uses: rounds, medians, ratios, tables, targets, JSON.

A benchmark module defines ``NAME``, ``TITLE`` and ``run(ctx: Context) -> BenchResult``.
Contenders of one comparison run through `alternate` / `alternate_async`, which runs each
once per round, rotating who goes first, so drift (thermal, other load, the server's heap)
hits them all alike; report the `median` of the rounds.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

HERE = Path(__file__).resolve().parent
_NUMERIC = re.compile(r"[-+]?[\d,.]+ ?(x|%|MB|s)?|n/a|-|[\d.]+ / [\d.]+")
LIBRARIES = (
    "ryng-async",
    "aiohttp",
    "msgspec",
    "anyio",
    "aiolimiter",
    "yarl",
    "httpx",
    "orjson",
    "matplotlib",
    "psutil",
)


# -- running -------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    """How a benchmark should run.

    Attributes:
        quick: tiny sizes, for a smoke test (numbers meaningless).
        rounds: rounds per comparison (None: each benchmark's default).
        out_dir: where results are written.
    """

    quick: bool = False
    rounds: int | None = None
    out_dir: Path = HERE

    def size(self, full: T, quick: T) -> T:
        """Pick the full or the quick value of a size."""
        return quick if self.quick else full

    def rounds_or(self, full: int, quick: int = 1) -> int:
        """Rounds to run: ``--rounds`` if given, else the benchmark's default."""
        if self.rounds is not None:
            return self.rounds
        return quick if self.quick else full


def _orders(names: Sequence[K], rounds: int) -> Iterator[list[K]]:
    for index in range(rounds):
        shift = index % len(names)
        yield list(names[shift:]) + list(names[:shift])


def alternate(contenders: Mapping[K, Callable[[], T]], rounds: int) -> dict[K, list[T]]:
    """Run every contender once per round, rotating the order; return each one's results."""
    results: dict[K, list[T]] = {name: [] for name in contenders}
    for order in _orders(list(contenders), rounds):
        for name in order:
            gc.collect()
            results[name].append(contenders[name]())
    return results


async def alternate_async(
    contenders: Mapping[K, Callable[[], Awaitable[T]]],
    rounds: int,
    *,
    between: Callable[[], Awaitable[object]] | None = None,
) -> dict[K, list[T]]:
    """`alternate` for coroutine functions; ``between`` runs before each contender."""
    results: dict[K, list[T]] = {name: [] for name in contenders}
    for order in _orders(list(contenders), rounds):
        for name in order:
            if between is not None:
                await between()
            gc.collect()
            results[name].append(await contenders[name]())
    return results


def peak_rss() -> int:
    """This process's peak RSS in bytes.

    ``VmHWM`` is the high-water mark of this process's own memory map. ``ru_maxrss`` is
    not: Linux carries the parent's RSS at fork over the exec, so a child of a big parent
    would report the parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# -- numbers -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN if the denominator is 0 or NaN."""
    if not denominator or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def spread(values: Sequence[float]) -> float:
    """(max - min) / median of the rounds: how much to trust a median."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return 0.0
    return ratio(max(finite) - min(finite), statistics.median(finite))


def fmt(value: Any, kind: str = "") -> str:
    """Format a cell: ``kind`` is "rate" (thousands), "x" (ratio), "%", "MB" or ""."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "%":
        return f"{value * 100:.0f}%"
    if kind == "MB":
        return f"{value / 1e6:.1f}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- reporting -----------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """A target from the benchmarks issue, and where the measurement stands.

    Attributes:
        name: what is compared, e.g. "SDK / aiohttp+msgspec at concurrency 16".
        value: the measured ratio (or value).
        goal: the target.
        op: ">=" or "<=".
        note: what the number means, or why it is what it is.
        complete: every lead of the runs measured was accepted; False leaves the target
            unmet whatever the value (a load that stopped early proves nothing).
    """

    name: str
    value: float
    goal: float
    op: str = ">="
    note: str = ""
    unit: str = "x"
    complete: bool = True
    met: bool = field(init=False)

    def __post_init__(self) -> None:
        if math.isnan(self.value) or not self.complete:
            self.met = False
        elif self.op == ">=":
            self.met = self.value >= self.goal
        else:
            self.met = self.value <= self.goal

    def show(self, value: float) -> str:
        """Format a value in this target's unit."""
        if math.isnan(value):
            return "n/a"
        digits = 2 if self.unit == "x" else 1
        # One more digit when rounding would show a miss as exactly the goal.
        if round(value, digits) == self.goal and not self.met:
            digits += 1
        if self.unit == "x":
            return f"{value:.{digits}f}x"
        return f"{value:,.{digits}f} {self.unit}"

    @property
    def goal_text(self) -> str:
        return f"{self.op} {self.goal:g}" + ("x" if self.unit == "x" else f" {self.unit}")

    @property
    def status(self) -> str:
        if self.met:
            return "met"
        if not self.complete:
            return "NOT met (not every lead accepted)"
        digits = 0 if self.gap >= 0.01 else 1 if self.gap >= 0.001 else 2
        return f"NOT met (off by {self.gap:.{digits}%})"

    @property
    def gap(self) -> float:
        """How far from the goal, as a share of it (0 when met)."""
        if self.met or math.isnan(self.value):
            return 0.0
        return abs(self.value - self.goal) / self.goal


@dataclass(slots=True)
class Table:
    """A table of formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def to_text(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        rule = "  ".join("-" * w for w in widths)
        body = [
            "  ".join(
                (c.ljust(w) if i == 0 else c.rjust(w))
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in self.rows
        ]
        out = [self.title, line, rule, *body]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        numeric = [
            index > 0 and all(_NUMERIC.fullmatch(row[index]) for row in self.rows)
            for index in range(len(self.columns))
        ]
        align = "|" + "|".join("---:" if right else ":---" for right in numeric) + "|"
        body = ["| " + " | ".join(row) + " |" for row in self.rows]
        out = [f"**{self.title}**", "", head, align, *body]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


@dataclass(slots=True)
class BenchResult:
    """What one benchmark measured: tables for people, ``data`` for plots and machines."""

    name: str
    title: str
    description: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    quick: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = [{**asdict(t), "gap": t.gap} for t in self.targets]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BenchResult:
        return cls(
            name=raw["name"],
            title=raw["title"],
            description=raw["description"],
            tables=[Table(**t) for t in raw.get("tables", [])],
            targets=[
                Target(
                    name=t["name"],
                    value=t["value"],
                    goal=t["goal"],
                    op=t["op"],
                    note=t["note"],
                    unit=t.get("unit", "x"),
                    complete=t.get("complete", True),
                )
                for t in raw.get("targets", [])
            ],
            notes=list(raw.get("notes", [])),
            data=dict(raw.get("data", {})),
            seconds=float(raw.get("seconds", 0.0)),
            quick=bool(raw.get("quick", False)),
        )


def targets_table(targets: Sequence[Target]) -> Table:
    table = Table("Targets", ["measure", "value", "target", "status", "note"])
    for target in targets:
        table.add(
            target.name, target.show(target.value), target.goal_text, target.status, target.note
        )
    return table


def print_result(result: BenchResult) -> None:
    """Print a benchmark's tables and targets to stdout."""
    print(f"\n== {result.title} ({result.seconds:.1f}s) ==")
    for table in result.tables:
        print()
        print(table.to_text())
    if result.targets:
        print()
        print(targets_table(result.targets).to_text())
    for note in result.notes:
        print(f"note: {note}")


# -- the machine and the results file -----------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine and software the numbers were measured on."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        physical, memory = None, None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "lead_checks": _lead_checks(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _lead_checks() -> str:
    """Which batched lead checks the SDK runs: compiled (``_speedups``) or pure Python."""
    from ryng_async import _lead_checks

    if getattr(_lead_checks, "ACCELERATED", False):
        return "compiled (ryng_async._speedups)"
    return "pure Python"


def load_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty one."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return {"machine": {}, "benchmarks": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
