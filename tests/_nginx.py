"""A real nginx (Debian's package) in front of a test server, for tests/test_proxy.py.

`Nginx` writes its own config to a temp dir (``daemon off``, one process, its pid, logs and
temp files in that dir), starts ``nginx -c CONF -p DIR`` on a free loopback port, and
stops it by its pid. `.ci/run` installs nginx when it is missing; without it, the tests
that need it are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    {http}
    server {{
        listen 127.0.0.1:{port};
        {server}
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {location}
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Nginx:
    """nginx on 127.0.0.1 proxying to ``upstream``; an async context manager.

    Args:
        directory: a temp dir for its config, pid, logs and temp files.
        upstream: the port of the server behind it, on 127.0.0.1.
        http, server, location: directives added to those blocks of the config.
    """

    def __init__(
        self,
        directory: Path,
        upstream: int,
        *,
        http: str = "",
        server: str = "",
        location: str = "",
    ) -> None:
        self.directory = directory
        self.upstream = upstream
        self.extra = {"http": http, "server": server, "location": location}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The URL to give `RyngClient` as ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The error log, for a failing test's message."""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def __aenter__(self) -> Self:
        assert NGINX is not None
        # A port picked free may be taken before nginx binds it: then try another.
        for _ in range(5):
            self.port = _free_port()
            conf = self.directory / "nginx.conf"
            conf.write_text(
                _CONF.format(
                    dir=self.directory, port=self.port, upstream=self.upstream, **self.extra
                )
            )
            self.process = subprocess.Popen(  # noqa: ASYNC220, S603 - a fixed binary, our config
                [NGINX, "-c", str(conf), "-p", str(self.directory), "-e", "stderr"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if await self._ready():
                return self
            self._stop()
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    async def _ready(self) -> bool:
        """Wait until nginx accepts connections (True), or has exited (False)."""
        assert self.process is not None
        deadline = time.monotonic() + 10
        # Bounded by the deadline: nginx offers no readiness event, so try to connect.
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                await anyio.sleep(0.02)
        return False

    def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
