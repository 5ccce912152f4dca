"""Benchmarks of ryng_async against what users would write instead.

Run everything with ``python -m benchmarks`` (``--quick`` for a smoke run at tiny sizes,
``--only NAME`` for one benchmark). Each ``bench_*.py`` module exposes ``NAME`` and
``run(ctx) -> BenchResult``; ``__main__`` finds them, and ``_report`` turns the collected
results into ``RESULTS.md`` and ``throughput.png``. The fake server always runs in another
process (``_server.py``).
"""
