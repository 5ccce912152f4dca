"""Bodies the receiver must refuse with a reason and no traceback.

A lone surrogate escape, a name given twice in one object (msgspec keeps the last value,
SQLite's ``json_extract`` the first, so the stored row would disagree with itself), and a
body that claims gzip but is not.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from test_callback_events import CONNECT_EXAMPLE

from ryng_async import ValidationError, parse_callback
from ryng_async._callback_events import duplicate_key
from ryng_async.callbacks import SQLiteCallbackStore, create_app, iter_store

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def receiving(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with SQLiteCallbackStore(tmp_path / "c.db") as store:
        runner = web.AppRunner(create_app(store=store))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/callbacks"
            async with aiohttp.ClientSession() as http:
                yield url, http
        finally:
            await runner.cleanup()


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, **headers: str
) -> tuple[int, Any]:
    async with http.post(url, data=body, headers=headers) as answer:
        return answer.status, await answer.json()


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udc00", rb"\ud800x", rb"\ud83d\u0041"])
def test_a_lone_surrogate_is_refused_with_a_reason_that_says_so(escape: bytes) -> None:
    body = CONNECT_EXAMPLE.replace(b'"agent-connected"', b'"agent-' + escape + b'"')
    with pytest.raises(ValidationError, match="lone UTF-16 surrogate"):
        parse_callback(body)
    paired = CONNECT_EXAMPLE.replace(b'"agent-connected"', rb'"agent-\ud83d\ude00"')
    assert parse_callback(paired).event == "agent-\U0001f600"


def test_a_duplicate_name_is_found_at_any_depth() -> None:
    assert duplicate_key(CONNECT_EXAMPLE) is None
    assert duplicate_key(CONNECT_EXAMPLE.replace(b"{", b'{"callID": 9, ', 1)) == "callID"
    nested = json.loads(CONNECT_EXAMPLE)
    nested["customFields"] = {"customField1": "a"}
    text = json.dumps(nested).replace(
        '"customField1": "a"', '"customField1": "a", "customField1": "b"'
    )
    assert duplicate_key(text.encode()) == "customField1"
    # A value that looks like a key ("x\": 1") sends it down the exact path: no duplicate.
    tricky = json.dumps({**json.loads(CONNECT_EXAMPLE), "note": 'x": 1, "callID'}).encode()
    assert duplicate_key(tricky) is None
    spaced = b'{"a" : 1, "b"\n:2, "a"\t: 3}'
    assert duplicate_key(spaced) == "a"


_names = st.sampled_from(["a", "b", "c", 'd": 1, "a'])
# Between a name and its colon, JSON allows any whitespace (the fast path must not miss it).
_colons = st.sampled_from([":", ": ", " :", "\n:\t", " \r\n : "])
# JSON texts whose objects may repeat a name, and whose strings may look like keys.
_json = st.recursive(
    (st.none() | st.integers() | st.text(alphabet='ab":\\ \u00e9', max_size=6)).map(json.dumps),
    lambda inner: (
        st.lists(st.tuples(_names, _colons, inner), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{json.dumps(k)}{c}{v}" for k, c, v in pairs) + "}"
        )
        | st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    ),
    max_leaves=12,
)


@settings(max_examples=300, derandomize=True)
@given(_json)
def test_duplicate_key_agrees_with_an_exact_reading(text: str) -> None:
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        names = [name for name, _ in items]
        if len(set(names)) != len(names):
            found.append("dup")

    json.loads(text, object_pairs_hook=pairs)
    assert (duplicate_key(text.encode()) is not None) == bool(found)


async def test_the_receiver_refuses_a_duplicate_name_and_a_lone_surrogate(tmp_path: Path) -> None:
    async with receiving(tmp_path) as (url, http):
        status, answer = await post(http, url, CONNECT_EXAMPLE.replace(b"{", b'{"callID": 9, ', 1))
        assert (status, answer) == (
            400,
            {"error": "callback body names 'callID' twice in one object"},
        )
        lone = CONNECT_EXAMPLE.replace(b'"agent-connected"', rb'"\ud800"')
        status, answer = await post(http, url, lone)
        assert status == 400
        assert "lone UTF-16 surrogate" in answer["error"]
        assert (await post(http, url, CONNECT_EXAMPLE))[0] == 200
    assert [s.raw async for s in iter_store(tmp_path / "c.db")] == [CONNECT_EXAMPLE]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_claims_compression_but_is_not_gets_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with receiving(tmp_path) as (url, http):
        async with http.post(
            url, data=b"not compressed at all", headers={"Content-Encoding": encoding}
        ) as answer:
            assert answer.status == 400
            reason = f"unreadable body: 400, message: Can not decode content-encoding: {encoding}"
            assert await answer.json() == {"error": reason}
            assert answer.headers["Connection"] == "close"
        # The next callback gets its 200 (a fresh connection, the broken one closed).
        assert (
            await post(http, url, gzip.compress(CONNECT_EXAMPLE), **{"Content-Encoding": "gzip"})
        )[0] == 200
    assert not [r for r in caplog.records if r.exc_info or "Unhandled" in r.getMessage()]


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) for name in ("brotli", "brotlicffi")),
    reason="a Brotli decoder is installed: aiohttp reads br bodies",
)
async def test_a_body_in_an_encoding_with_no_decoder_gets_400_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp refuses it while parsing, before the receiver's handler runs.
    caplog.set_level(logging.DEBUG)
    async with receiving(tmp_path) as (url, http):
        async with http.post(url, data=b"...", headers={"Content-Encoding": "br"}) as answer:
            assert answer.status == 400
            assert "Can not decode content-encoding: brotli (br)" in await answer.text()
        assert (await post(http, url, CONNECT_EXAMPLE))[0] == 200
    assert not [r for r in caplog.records if r.exc_info or "Error handling" in r.getMessage()]
    refused = [r.getMessage() for r in caplog.records if r.name == "ryng_async.callbacks"]
    assert any(
        "refused an unreadable request (400): " in m and "brotli (br)" in m for m in refused
    ), refused


# -- the WAL under sustained load ---------------------------------------------------------


async def test_the_wal_starts_over_under_sustained_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured before the fix: at ~8,700 callbacks/s without a pause the WAL never started
    # over (450 MB in 20 s against a 64 MB journal_size_limit). Checkpoint rounds every 200
    # rows here stand in for a long run: the WAL must stay near one round's worth, not grow.
    from ryng_async.callbacks import _sqlite_store

    monkeypatch.setattr(_sqlite_store, "_CHECKPOINT_ROWS", 200)
    path = tmp_path / "c.db"
    wal = tmp_path / "c.db-wal"
    base = json.loads(CONNECT_EXAMPLE)
    biggest = 0
    async with SQLiteCallbackStore(path) as store:

        async def sender(first: int) -> None:
            nonlocal biggest
            for call_id in range(first, 8000, 32):
                body = json.dumps({**base, "callID": call_id}).encode()
                assert await store.add(parse_callback(body), body)
                if call_id % 64 == 0 and wal.exists():
                    biggest = max(biggest, wal.stat().st_size)

        async with anyio.create_task_group() as group:
            for first in range(32):
                group.start_soon(sender, first)
        assert await store.count() == 8000
    assert biggest < 4 << 20, f"WAL reached {biggest / 1e6:.1f} MB"
