"""Fan one load out over a Dask cluster: every worker loads its shard under one shared limit.

Each Dask task opens its own client with a `RedisLimiter` naming the same key, reads the
whole input (a CSV file here: a table, a Parquet dataset, any input every worker can read
in the same order) and sends only its shard (``shard=(i, n)``); the driver merges the
shards' reports into one that accounts for every lead. However many workers run, the
account sees one rate: the limit lives in Redis, not in the workers.

Why Dask rather than Celery: an ETL load is a batch job with a result. Dask's
``client.map`` hands the shards out and brings the reports back to the driver to merge,
with nothing more to run than the cluster; the same code runs on a laptop's
``LocalCluster``, on Kubernetes or YARN, and next to the dataframes the data is prepared
with. Celery is made for a stream of independent background tasks in a web service: the
same job there needs a broker, a result backend and a chord to gather the reports.

Runs as is: a LocalCluster of 4 worker processes, a redis-server started on a free port
(or ``RYNG_REDIS_URL``), and a fake Ryng server that allows RATE requests per second
(threaded, in this process). With RYNG_ACCESS_TOKEN and RYNG_SUBDOMAIN (or RYNG_BASE_URL)
and RYNG_REDIS_URL set, it loads into your account (campaign RYNG_CAMPAIGN, default 42) at
RYNG_RATE requests per second (default 5). Without dask.distributed, redis-py or a Redis,
it says so and exits with status 77 (skipped: it loaded nothing).

    pip install 'ryng-async[redis,fleet-example]'
"""

import asyncio
import csv
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

try:
    from dask.distributed import Client, LocalCluster

    import ryng_async.redis  # noqa: F401 - checks that redis-py is there
except ImportError as missing:
    print(f"skipped: {missing} (pip install 'ryng-async[redis,fleet-example]')")
    sys.exit(77)  # SKIPPED, below

from ryng_async import BulkReport, RyngClient
from ryng_async.redis import RedisLimiter
from ryng_async.testing import FakeRyngServer

SKIPPED = 77  # the exit status of a run that could not load anything (as in automake)
WORKERS = 4
LEADS = 3_000
BATCH = 25
RATE = 20  # requests per second: the fake server's limit, and the fleet's


def write_input(path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["phone", "name"])
        writer.writerows((f"+9198{i:08d}", f"Customer {i}") for i in range(LEADS))


def read_leads(path: str):
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            yield {"number": row["phone"], "customField1": row["name"]}


def load_shard(index: int, count: int, settings: dict) -> BulkReport:
    """One Dask task: load shard ``index`` of ``count`` under the fleet's shared limit."""

    async def run() -> BulkReport:
        limiter = RedisLimiter(settings["redis_url"], settings["key"], settings["rate"])
        async with (
            limiter,
            RyngClient(
                base_url=settings["base_url"],
                access_token=settings["token"],
                limiter=limiter,
            ) as client,
        ):
            return await client.bulk_append(
                settings["campaign"],
                read_leads(settings["input"]),
                batch_size=BATCH,
                concurrency=4,
                shard=(index, count),
            )

    # A Dask task runs in a worker thread, with no event loop of its own.
    return asyncio.run(run())


def start_fake_server() -> tuple[FakeRyngServer, asyncio.AbstractEventLoop]:
    """A FakeRyngServer on its own event loop, in a thread, reachable by every worker."""
    loop = asyncio.new_event_loop()
    server = FakeRyngServer(rate_limit=RATE)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    started.wait(30)
    return server, loop


def start_redis(folder: Path) -> tuple[str, subprocess.Popen | None]:
    """RYNG_REDIS_URL, or a redis-server of our own on a free port (None if neither)."""
    if url := os.environ.get("RYNG_REDIS_URL"):
        return url, None
    binary = shutil.which("redis-server")
    if binary is None:
        return "", None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # its log says when it is ready
        if "Ready to accept connections" in line:
            break
    process.stdout.close()
    if process.poll() is not None:
        return "", None
    return f"redis://127.0.0.1:{port}/0", process


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis_url, redis_process = start_redis(folder)
        if not redis_url:
            print("skipped: no Redis (set RYNG_REDIS_URL, or apt-get install redis-server)")
            return SKIPPED
        server = loop = None
        try:
            settings = {"redis_url": redis_url, "key": f"example-{os.getpid()}"}
            if os.environ.get("RYNG_ACCESS_TOKEN"):
                base_url = os.environ.get("RYNG_BASE_URL") or (
                    f"https://{os.environ['RYNG_SUBDOMAIN']}.ryng.in"
                )
                settings |= {
                    "base_url": base_url,
                    "token": os.environ["RYNG_ACCESS_TOKEN"],
                    "campaign": os.environ.get("RYNG_CAMPAIGN", "42"),
                    "rate": float(os.environ.get("RYNG_RATE", "5")),
                }
            else:
                server, loop = start_fake_server()
                settings |= {
                    "base_url": server.base_url,
                    "token": server.access_token,
                    "campaign": "42",
                    "rate": RATE,
                }
            settings["input"] = str(folder / "leads.csv")
            write_input(folder / "leads.csv")

            with (
                LocalCluster(
                    n_workers=WORKERS,
                    threads_per_worker=1,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                ) as cluster,
                Client(cluster) as dask,
            ):
                futures = dask.map(
                    load_shard, range(WORKERS), count=WORKERS, settings=settings, pure=False
                )
                reports = dask.gather(futures)

            for report in reports:
                print(f"shard {report.shard}: {report}")
            merged = BulkReport.merge(reports)
            print(f"merged: {merged}")
            if server is not None:
                numbers = server.lead_counts()
                print(
                    f"the server holds {len(numbers):,} distinct leads, none twice: "
                    f"{set(numbers.values()) == {1}}; most requests in any second "
                    f"(429s included): {server.max_requests_per_window(1.0)} (limit {RATE}); "
                    f"429s: {server.statuses[429]}"
                )
            return 0 if merged.ok else 1
        finally:
            if server is not None and loop is not None:
                asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
                loop.call_soon_threadsafe(loop.stop)
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(10)


if __name__ == "__main__":
    sys.exit(main())
