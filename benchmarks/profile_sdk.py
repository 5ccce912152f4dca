"""Profile the SDK's hot paths with pyinstrument: ``python -m benchmarks.profile_sdk``.

``encoding``: the bulk engine's validate + pack path over wire dicts (as in
``bench_encoding``). ``throughput``: ``bulk_append`` of 1M leads at concurrency 16 against
the fake server in another process (as in ``bench_throughput``). Prints pyinstrument's
tree and a flat table of self time by ``file:function``, the costs to attack first.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from . import _data

BATCH = 1000


def _self_times(root: Any) -> Counter[str]:
    """Self time per ``file:function`` (pyinstrument puts it in synthetic [self] leaves)."""
    totals: Counter[str] = Counter()
    stack = [root]
    while stack:
        frame = stack.pop()
        for child in frame.children:
            if child.is_synthetic_leaf:
                totals[f"{frame.file_path_short}:{frame.function}"] += child.time
            else:
                stack.append(child)
        if not frame.children:
            totals[f"{frame.file_path_short}:{frame.function}"] += frame.time
    return totals


def _report(profiler: Any, top: int) -> None:
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    root = profiler.last_session.root_frame()
    total = root.time or 1.0
    print(f"self time by file:function (top {top}, of {total:.3f}s sampled)")
    for name, seconds in _self_times(root).most_common(top):
        print(f"  {seconds / total:6.1%}  {seconds:7.3f}s  {name}")


def profile_encoding(leads: int) -> Any:
    from pyinstrument import Profiler

    from .bench_encoding import _sdk_pack

    chunks = _data.chunks(_data.rows(leads), BATCH)
    _sdk_pack(chunks[:2])  # imports and first-call costs stay out of the profile
    profiler = Profiler(interval=0.0005)
    with profiler:
        for _ in range(5):
            _sdk_pack(chunks)
    return profiler


async def _load(leads: int, concurrency: int) -> Any:
    from pyinstrument import Profiler

    from ryng_async import RyngClient

    from ._server import CAMPAIGN, TOKEN, ServerProcess

    rows = _data.rows(leads)
    with ServerProcess() as server:
        async with RyngClient(base_url=server.base_url, access_token=TOKEN) as client:
            profiler = Profiler(interval=0.0005, async_mode="disabled")
            with profiler:
                report = await client.bulk_append(
                    CAMPAIGN, rows, batch_size=BATCH, concurrency=concurrency
                )
    print(report)
    return profiler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sdk")
    parser.add_argument("target", choices=("encoding", "throughput"))
    parser.add_argument("--leads", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    if args.target == "encoding":
        profiler = profile_encoding(args.leads or 200_000)
    else:
        profiler = asyncio.run(_load(args.leads or 1_000_000, args.concurrency))
    _report(profiler, args.top)


if __name__ == "__main__":
    main()
