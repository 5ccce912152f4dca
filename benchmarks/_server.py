"""The fake Ryng server in its own process, and the parent's handle on it.

Child: ``python -m benchmarks._server --port 0 --latency 0.05 --rate-limit 50`` starts a
`FakeRyngServer` on 127.0.0.1 plus a small control app on a second port, prints one JSON
line ``{"port": ..., "control_port": ..., "pid": ...}`` on stdout, and serves until its
stdin closes (so it never outlives the parent). At shutdown it prints a final stats line.
By default the server validates every lead as the real API does (and pays the CPU for
it); ``--sink`` makes it a decode-only sink (``validate_leads=False``).

Control app (GET): ``/stats`` returns the server's view of the load (every request's
arrival time, the most requests seen in any 1 s window, statuses, leads accepted);
``/reset`` clears it between rounds.

Parent: ``with ServerProcess(latency=0.05) as server: ...`` gives ``server.base_url``,
``server.stats()`` / ``await server.astats()`` and ``reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

TOKEN = "bench-token"
CAMPAIGN = "4242"
_ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 20.0
# Loopback only: never route control calls through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the child process ------------------------------------------------------------------


def _stats(server: Any) -> dict[str, Any]:
    arrivals = list(server.arrivals)
    first = arrivals[0] if arrivals else 0.0
    return {
        "received": server.received_requests,
        "accepted_requests": server.accepted_requests,
        "accepted_leads": server.accepted_leads,
        "statuses": {str(k): v for k, v in sorted(server.statuses.items())},
        "max_in_flight": server.max_in_flight,
        "max_per_1s_window": server.max_requests_per_window(1.0),
        "arrivals": [round(t - first, 6) for t in arrivals],
    }


def _reset(server: Any) -> None:
    server.arrivals.clear()
    server.received_requests = 0
    server.accepted_requests = 0
    server.accepted_leads = 0
    server.statuses.clear()
    server.max_in_flight = server.in_flight
    server.requests.clear()
    server.leads.clear()


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from ryng_async.testing import FakeRyngServer

    server = FakeRyngServer(
        access_token=TOKEN,
        latency=args.latency,
        rate_limit=args.rate_limit,
        record=args.record,
        port=args.port,
        validate_leads=not args.sink,
    )
    await server.start()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(_stats(server))

    async def reset(_: web.Request) -> web.Response:
        _reset(server)
        return web.json_response({"ok": True})

    control = web.Application()
    control.router.add_get("/stats", stats)
    control.router.add_get("/reset", reset)
    runner = web.AppRunner(control, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = runner.addresses[0][1]

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    print(
        json.dumps({"port": server.port, "control_port": control_port, "pid": os.getpid()}),
        flush=True,
    )
    await stop.wait()
    watcher.cancel()
    final = _stats(server)
    final["arrivals"] = len(final["arrivals"])
    print(json.dumps({"final": final}), flush=True)
    await runner.cleanup()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--record", action="store_true", help="keep bodies and leads")
    parser.add_argument(
        "--sink", action="store_true", help="decode only, validate no lead (validate_leads=False)"
    )
    asyncio.run(_serve(parser.parse_args(argv)))


# -- the parent's handle ----------------------------------------------------------------


class ServerProcess:
    """A fake server in a child process; a (sync) context manager.

    Args:
        latency: seconds the server waits before each answer.
        rate_limit: requests per second the server accepts (429 beyond), or None.
        record: keep every body and lead (off for big loads).
        validate_leads: check every lead as the real API would (the default); False runs
            a decode-only sink (``--sink``), which spends less server CPU per lead.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate_limit: float | None = None,
        record: bool = False,
        validate_leads: bool = True,
    ) -> None:
        self.latency = latency
        self.rate_limit = rate_limit
        self.record = record
        self.validate_leads = validate_leads
        self.port = 0
        self.control_port = 0
        self.final: dict[str, Any] | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def append_url(self) -> str:
        return f"{self.base_url}/rest-api/v1/campaign/{CAMPAIGN}"

    def start(self) -> None:
        command = [sys.executable, "-m", "benchmarks._server", "--port", "0"]
        command += ["--latency", str(self.latency)]
        if self.rate_limit is not None:
            command += ["--rate-limit", str(self.rate_limit)]
        if self.record:
            command.append("--record")
        if not self.validate_leads:
            command.append("--sink")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_ROOT, env=env
        )
        assert self._process.stdout is not None
        line = _readline(self._process, _START_TIMEOUT)
        info = json.loads(line)
        self.port = int(info["port"])
        self.control_port = int(info["control_port"])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:  # communicate() closes stdin: the child's cue to stop
            out, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        for line in out.splitlines():
            if line.startswith('{"final"'):
                self.final = json.loads(line)["final"]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control (outside timed regions only) ------------------------------------------

    def _control_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.control_port}{path}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        import psutil

        assert self._process is not None
        times = psutil.Process(self._process.pid).cpu_times()
        return float(times.user + times.system)

    def stats(self) -> dict[str, Any]:
        """The server's view of the requests since the last reset (blocking)."""
        with _OPENER.open(self._control_url("/stats"), timeout=30) as answer:
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def reset(self) -> None:
        """Forget the requests seen so far (blocking)."""
        with _OPENER.open(self._control_url("/reset"), timeout=30) as answer:
            answer.read()

    async def astats(self) -> dict[str, Any]:
        """`stats` from inside an event loop."""
        return await asyncio.to_thread(self.stats)

    async def areset(self) -> None:
        """`reset` from inside an event loop."""
        await asyncio.to_thread(self.reset)


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    """Read the child's first stdout line, or fail after ``timeout`` seconds."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            raise RuntimeError(f"the benchmark server did not start within {timeout}s")
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError(f"the benchmark server exited with code {process.returncode}")
    return line


if __name__ == "__main__":
    main()
