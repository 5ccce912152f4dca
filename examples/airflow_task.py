"""A plain function for Airflow's PythonOperator: load a file or DataFrame into a campaign.

Synchronous code all the way (``ryng_async.sync`` runs the load in an event loop of its
own), no Airflow import: the task fails when the function raises, and what it returns
goes to XCom. In a DAG::

    from airflow.operators.python import PythonOperator
    from airflow_task import load_campaign

    PythonOperator(
        task_id="load_leads",
        python_callable=load_campaign,
        op_kwargs={
            "campaign_id": "42",
            "source": "/data/leads-{{ ds }}.parquet",
            # Airflow retries the task with the same checkpoint: batches accepted before
            # are not sent again, and a batch in flight at the crash is not resent blind.
            "checkpoint": "/data/ryng-42-{{ ds }}.db",
        },
        retries=2,
    )

Credentials come from RYNG_SUBDOMAIN and RYNG_ACCESS_TOKEN (an Airflow connection or
secret backend exported to the worker's environment), never from the DAG file.

``python examples/airflow_task.py`` runs it against a fake Ryng server on 127.0.0.1: a
clean file (the task succeeds and prints its XCom), then a file with a bad number (the
task fails). With RYNG_* set, ``python examples/airflow_task.py CAMPAIGN FILE`` loads FILE.
Needs ``pip install "ryng-async[polars,arrow]"``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ryng_async import BulkReport, RyngError, sync
from ryng_async.dataframes import leads_from_frame

logger = logging.getLogger("airflow.task")


def read_frame(path: str | os.PathLike[str]) -> Any:
    """A lead file as a table: CSV in one piece (every column text), Parquet streamed."""
    name = os.fspath(path).lower()
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)  # batch by batch: memory stays flat
        return pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches())
    import polars as pl

    # Every column as text: an id "007" stays "007", a number keeps its "+".
    return pl.read_csv(path, infer_schema=False)


def load_campaign(
    campaign_id: str,
    source: Any,
    *,
    checkpoint: str | None = None,
    batch_size: int = 500,
    concurrency: int = 8,
    **client: Any,
) -> dict[str, Any]:
    """Load ``source`` (a file path, or a pandas/polars DataFrame) into a campaign.

    Returns a small summary for XCom; raises if any lead was not accepted (the task
    fails: a 403, a server down, invalid rows...), with the report in the log.
    ``client`` takes `RyngClient` settings (``base_url``, ``access_token``, ...).
    """
    frame = read_frame(source) if isinstance(source, str | os.PathLike) else source
    leads, names = leads_from_frame(frame)
    report = BulkReport()  # kept whatever ends the load, for the log
    try:
        sync.bulk_append(
            campaign_id,
            leads,
            custom_field_names=names,
            batch_size=batch_size,
            concurrency=concurrency,
            checkpoint=checkpoint,
            report=report,
            **client,
        )
    finally:
        logger.info("ryng load of campaign %s: %s", campaign_id, report)
    report.raise_for_failures()
    return {
        "campaign_id": campaign_id,
        "total": report.total,
        "accepted": report.accepted,
        "resumed": report.resumed,
        "seconds": round(report.elapsed, 3),
    }


# -- trying it without Airflow or an account -----------------------------------------------


def _fake_ryng_in_a_thread() -> tuple[Any, Callable[[], None]]:
    """A fake Ryng server on its own event loop thread (the task's code is synchronous).

    Returns the server and a function that stops it.
    """
    from ryng_async.testing import FakeRyngServer

    server = FakeRyngServer()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fake server did not start")

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return server, stop


def demo() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    server, stop_server = _fake_ryng_in_a_thread()
    connection = {"base_url": server.base_url, "access_token": server.access_token}
    try:
        with tempfile.TemporaryDirectory() as folder:
            good = Path(folder, "leads.csv")
            lines = ["number,Name,City"] + [f"+9198{i:08d},Customer {i},Pune" for i in range(5000)]
            good.write_text("\n".join(lines) + "\n")
            xcom = load_campaign("42", good, checkpoint=str(Path(folder, "42.db")), **connection)
            print("task succeeded; XCom:", xcom)
            again = load_campaign("42", good, checkpoint=str(Path(folder, "42.db")), **connection)
            print("a retry of the same task sends nothing again; XCom:", again)
            bad = Path(folder, "bad.csv")
            bad.write_text("number,Name\n+919876543210,Max\n98765,Alex\n")
            try:
                load_campaign("43", bad, **connection)
            except RyngError as exc:
                print(f"task failed, as it should: {type(exc).__name__}: {exc}")
            else:
                raise AssertionError("a file with a bad number must fail the task")
        assert server.lead_count() == 5001
    finally:
        stop_server()


if __name__ == "__main__":
    if os.environ.get("RYNG_ACCESS_TOKEN") and len(sys.argv) == 3:
        print(load_campaign(sys.argv[1], sys.argv[2]))
    else:
        demo()
