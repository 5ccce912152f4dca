"""The command line's exit code for a resource that failed (4), apart from usage errors (2).

A Redis that cannot be reached or a journal whose disk fills mid-load is not the
operator's mistake: the same command works once the resource is back, so a script must be
able to tell it from a bad flag or an unreadable file. Each case runs the real command
(``python -m ryng_async``) against a `FakeRyngServer`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from ryng_async import ConfigurationError, ResourceError
from ryng_async.testing import FakeRyngServer, ReceivedRequest

CLI = [sys.executable, "-m", "ryng_async"]
TOKEN = "tok-EXIT-CODES-4d2c"

pytestmark = pytest.mark.anyio


def env_for(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env["RYNG_BASE_URL"] = base_url
    env["RYNG_ACCESS_TOKEN"] = TOKEN
    return env


async def append(*args: str, env: dict[str, str], campaign: str = "42") -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, "append", campaign, *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def sheet(path: Path, rows: int) -> Path:
    path.write_text("number,name\n" + "".join(f"+9198{i:08d},n{i}\n" for i in range(rows)))
    return path


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound but not listening, held for the block: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_a_redis_outage_exits_4_and_says_nothing_was_sent(tmp_path: Path) -> None:
    pytest.importorskip(
        "redis", reason="redis-py is not installed: pip install 'ryng-async[redis]'"
    )
    leads = sheet(tmp_path / "leads.csv", 30)
    report = tmp_path / "report.json"
    async with FakeRyngServer(access_token=TOKEN) as server:
        with refusing_port() as port:
            code, out, err = await append(
                str(leads), "--batch-size", "10", "--rate-limit", "50", "--report", str(report),
                "--redis-url", f"redis://:s3cret@127.0.0.1:{port}/0",
                env=env_for(server.base_url),
            )  # fmt: skip
        received = server.lead_count()
    assert code == 4, err
    assert f"cannot reach Redis at 127.0.0.1:{port}" in err
    assert "nothing was sent" in err
    # The way on names the command line's flag, not the Python keyword.
    assert "add --redis-fallback local (with --shard I/N or --redis-workers N)" in err
    assert "fallback='local'" not in err
    assert "s3cret" not in err + out
    assert "(exit 4)" in out
    assert received == 0
    document = json.loads(report.read_text())
    assert document["exit_code"] == 4
    assert document["skipped"] == 30


async def test_redis_url_without_a_rate_is_a_usage_error(tmp_path: Path) -> None:
    leads = sheet(tmp_path / "leads.csv", 3)
    async with FakeRyngServer(access_token=TOKEN) as server:
        code, _, err = await append(
            str(leads), "--redis-url", "redis://127.0.0.1:1/0", env=env_for(server.base_url)
        )
        assert server.lead_count() == 0
    assert code == 2, err
    assert "--redis-url needs --rate-limit" in err


def break_journal(path: Path) -> None:
    """Drop the journal's tables from outside: its owner's next commit fails, as on a
    disk that filled up (a real SQLite error, raised where a write fails)."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batch")
    conn.execute("DROP TABLE log")
    conn.commit()
    conn.close()


async def test_a_journal_write_failing_mid_load_exits_4_and_a_refused_journal_exits_2(
    tmp_path: Path,
) -> None:
    from ryng_async import checkpoint

    # A journal write that fails mid-load is a ResourceError, not a ConfigurationError...
    assert checkpoint.CheckpointError.__bases__ == (ResourceError,)
    assert not issubclass(checkpoint.CheckpointError, ConfigurationError)
    # ...and a journal refused before anything is sent stays a ConfigurationError as well,
    # so `except ConfigurationError` around a load still sees it.
    refused = getattr(checkpoint, "CheckpointRefusedError", None)
    assert refused is not None
    assert refused.__bases__ == (checkpoint.CheckpointError, ConfigurationError)
    assert "CheckpointRefusedError" in checkpoint.__all__

    leads = sheet(tmp_path / "leads.csv", 20)
    journal = tmp_path / "load.db"

    def break_on_arrival(request: ReceivedRequest) -> None:
        break_journal(journal)

    async with FakeRyngServer(access_token=TOKEN, on_request=break_on_arrival) as server:
        code, out, err = await append(
            str(leads), "--checkpoint", str(journal), "--batch-size", "10",
            "--concurrency", "1", env=env_for(server.base_url),
        )  # fmt: skip
    assert code == 4, err
    assert "could not write the checkpoint journal" in err
    assert "(exit 4)" in out

    other = tmp_path / "other.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url)
        first, _, err = await append(str(leads), "--checkpoint", str(other), env=env)
        assert first == 0, err
        code, _, err = await append(str(leads), "--checkpoint", str(other), env=env, campaign="43")
        assert server.lead_count() == 20  # the second load sent nothing
    assert code == 2, err
    assert "belongs to another load" in err


def under_file_size_limit(limit: int, *argv: str) -> list[str]:
    """``argv`` run by a Python that first lowers its file-size limit (``ulimit -f``) to
    ``limit`` bytes: a write past it fails with EFBIG (SIGXFSZ ignored), as on a full disk."""
    setup = (
        "import os, resource, signal, sys; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY)); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [sys.executable, "-c", setup, *argv]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize(
    ("limit", "where"),
    [(0, "the lock file"), (8192, "the checkpoint journal")],
    ids=["lock-file", "journal"],
)
async def test_a_journal_that_cannot_be_created_for_lack_of_room_exits_4_not_2(
    tmp_path: Path, limit: int, where: str
) -> None:
    # No room for the journal is the environment's failure, not a bad setting: exit 4 and
    # a message naming the file and the limit, not 2's "fix your settings".
    leads = sheet(tmp_path / "leads.csv", 20)
    journal = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        argv = under_file_size_limit(
            limit, "-m", "ryng_async", "append", "42", str(leads), "--checkpoint", str(journal)
        )
        with anyio.fail_after(60):
            done = await anyio.run_process(argv, env=env_for(server.base_url), check=False)
        received = server.lead_count()
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert f"cannot write {where}" in err
    assert repr(str(journal)) in err
    assert f"the file-size limit (ulimit -f) of {limit:,} bytes is reached" in err
    assert "Traceback" not in err
    assert received == 0  # refused before anything was sent


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
async def test_a_journal_resumed_on_a_full_disk_exits_4(tmp_path: Path) -> None:
    leads = sheet(tmp_path / "leads.csv", 20)
    journal = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url)
        code, _, err = await append(str(leads), "--checkpoint", str(journal), env=env)
        assert code == 0, err
        size = journal.stat().st_size  # no room past what the journal holds already
        argv = under_file_size_limit(
            size, "-m", "ryng_async", "append", "42", str(leads), "--checkpoint", str(journal)
        )
        with anyio.fail_after(60):
            done = await anyio.run_process(argv, env=env, check=False)
        assert server.lead_count() == 20  # the second run sent nothing
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert f"cannot write the checkpoint journal {str(journal)!r}: the file-size limit" in err


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
async def test_a_journal_filling_its_room_mid_load_says_so_and_exits_4(tmp_path: Path) -> None:
    leads = sheet(tmp_path / "leads.csv", 10_000)
    journal = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        argv = under_file_size_limit(
            60_000, "-m", "ryng_async", "append", "42", str(leads), "--checkpoint",
            str(journal), "--batch-size", "10", "--concurrency", "2",
        )  # fmt: skip
        with anyio.fail_after(60):
            done = await anyio.run_process(argv, env=env_for(server.base_url), check=False)
        received = server.lead_count()
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert 0 < received < 10_000  # the journal was made, and filled its room mid-load
    assert (
        f"could not write the checkpoint journal {str(journal)!r}: the file-size limit "
        "(ulimit -f) of 60,000 bytes is reached" in err
    )


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
async def test_a_callback_store_with_no_room_exits_4_naming_the_store_and_the_limit(
    tmp_path: Path,
) -> None:
    store = tmp_path / "callbacks.db"
    argv = under_file_size_limit(
        0, "-m", "ryng_async", "callbacks", "serve", "--port", "0", "--store", str(store)
    )
    with anyio.fail_after(60):
        done = await anyio.run_process(argv, check=False)
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert f"cannot write callback store {store}" in err
    assert "the file-size limit (ulimit -f) of 0 bytes is reached" in err
    assert "Traceback" not in err
