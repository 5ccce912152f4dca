"""Receive Ryng's callbacks, then say lead by lead what became of a load.

Everything runs on 127.0.0.1: a fake Ryng API takes the load, the receiver listens for
callbacks, and this script plays Ryng's dialler by posting a callback for some of the
leads the fake API accepted. In production, run the receiver where Ryng can reach it
(``ryng-async callbacks serve --port 8080 --store callbacks.db --secret ...``, or
``web.run_app(create_app(...), access_log_class=RedactingAccessLogger)``) and pass its URL
as ``connect_callback_url`` and ``terminal_callback_url``.
"""

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web

from ryng_async import RyngClient
from ryng_async.callbacks import (
    CallbackEvent,
    RedactingAccessLogger,
    SQLiteCallbackStore,
    TerminalCallback,
    create_app,
    reconcile,
    reconcile_to_file,
)
from ryng_async.testing import FakeRyngServer

LEADS = [
    {"number": f"+9198765432{i:02d}", "customField1": f"Customer {i}", "customField3": f"crm-{i}"}
    for i in range(8)
]


async def on_callback(event: CallbackEvent) -> None:
    """Called once per new callback, after it is stored (keep it quick)."""
    what = event.disposition if isinstance(event, TerminalCallback) else event.event
    print(f"  callback: call {event.call_id} for {event.custom_fields['customField3']}: {what}")


def ryng_callback(kind: str, call_id: int, lead: dict[str, str]) -> bytes:
    """A callback body as Ryng would post it for ``lead`` (abridged)."""
    body = {
        "callID": call_id,
        "callbackType": kind,
        "event": "call-ended" if kind == "terminal" else "agent-connected",
        "customerNum": lead["number"],
        "customFields": {"customField3": lead["customField3"]},
    }
    if kind == "terminal":
        body |= {"disposition": "Interested", "talktime": 42, "callEnded": "2024-05-01T10:00:00Z"}
    return msgspec.json.encode(body)


async def main() -> None:
    secret = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteCallbackStore(Path(tmp) / "callbacks.db") as store:
            app = create_app(store=store, handler=on_callback, secret=secret)
            runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            callback_url = f"http://127.0.0.1:{runner.addresses[0][1]}/callbacks/{secret}"

            async with (
                FakeRyngServer() as api,
                RyngClient(base_url=api.base_url, access_token=api.access_token) as client,
            ):
                report = await client.bulk_append(
                    "42",
                    LEADS,
                    batch_size=3,
                    connect_callback_url=callback_url,
                    terminal_callback_url=callback_url,
                )
                print(report)
                appended = api.leads

            print("Ryng calls some of them (one callback arrives twice):")
            async with aiohttp.ClientSession() as http:
                for call_id, lead in enumerate(appended[:5], start=100):
                    kinds = ["connect", "terminal"] if call_id % 2 == 0 else ["connect"]
                    for kind in [*kinds, "connect"]:  # the last one is a resend
                        async with http.post(callback_url, data=ryng_callback(kind, call_id, lead)):
                            pass
            await runner.cleanup()

            print("\nLead by lead, matched on customField3:", flush=True)
            summary = await reconcile_to_file(
                reconcile(LEADS, report, store, key="customField3"), sys.stdout.buffer
            )
            print()
            print(summary.table())


asyncio.run(main())
