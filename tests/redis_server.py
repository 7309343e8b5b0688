"""A real ``redis-server`` (Debian package) for tests: its own instance on a free
127.0.0.1 port, never the system service, no persistence; stopped (and restartable on the
same port) by the test.

    with running_redis(tmp_path / "redis", password="s3cret") as redis_server:
        setup.write({"cluster": {"redis_url": redis_server.url}})
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def missing_redis() -> str | None:
    """Why redis-server cannot run here (a sentence), or None when it can."""
    if not os.access(REDIS_SERVER, os.X_OK):
        return ("redis-server is missing: install Debian's redis-server package "
                "(apt-get install -y redis-server; ./dev test does)")
    return None


@dataclass
class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` again on the same port."""

    workdir: Path
    port: int
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5)

    def start(self, timeout: float = 15) -> None:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                   "--daemonize", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start:\n" + (
                            self.workdir / "redis.log").read_text(errors="replace")) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, SIGKILL after 10 s); its data is gone (no persistence)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_redis(workdir: Path, password: str | None = None) -> Iterator[RedisServer]:
    """Start redis-server on a free port; it is stopped on exit."""
    server = RedisServer(workdir, free_port(), password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
