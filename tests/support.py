"""Helpers shared by the integration and end-to-end tests: free ports, config
files, and a real ``elemta serve`` process that is always cleaned up."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit

# Ports for test listeners come from below the kernel's ephemeral range (32768-60999 here):
# a port found free there can be taken again by any outgoing connection or port-0 bind
# (Pebble, redis, certbot, another daemon) before the daemon binds it, which made a cluster
# test fail with "port already in use". Below it only explicit binds compete, and within one
# run no port is handed out twice.
_LOW, _HIGH = 12000, 32000
_next_port = itertools.count(_LOW + (os.getpid() * 7919) % (_HIGH - _LOW))


def _bindable(port: int, host: str, kind: socket.SocketKind) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port that nothing is bound to right now, outside the ephemeral range."""
    for _ in range(_HIGH - _LOW):
        port = _LOW + (next(_next_port) - _LOW) % (_HIGH - _LOW)
        if _bindable(port, host, kind):
            return port
    raise RuntimeError(f"no free port between {_LOW} and {_HIGH} on {host}")


@dataclass
class Setup:
    """A config file for a daemon on 127.0.0.1 with every path under ``root``."""

    root: Path
    smtp_port: int = field(default_factory=free_port)
    smtps_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    @property
    def config_path(self) -> Path:
        return self.root / "elemta.toml"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def maildir_root(self) -> Path:
        return self.root / "mail"

    @property
    def pid_file(self) -> Path:
        return self.root / "elemta.pid"

    def write(self, overrides: Mapping[str, Mapping[str, object]] | None = None) -> Path:
        """Write elemta.toml; ``overrides`` maps a section ("tls.letsencrypt") to keys."""
        sections: dict[str, dict[str, object]] = {
            "server": {
                "hostname": "mail.example.com",
                "listen_addr": f"127.0.0.1:{self.smtp_port}",
                "pid_file": str(self.pid_file),
                "idle_timeout": "60s",
                "shutdown_timeout": "10s",
            },
            "delivery": {
                "local_domains": ["example.com"],
                "maildir_root": str(self.maildir_root),
            },
            "tls": {"listen_addr": f"127.0.0.1:{self.smtps_port}"},
            "tls.letsencrypt": {
                "cache_dir": str(self.cache_dir),
                "http_addr": f"127.0.0.1:{self.http_port}",
                "domain": "mail.example.com",
            },
        }
        for section, keys in (overrides or {}).items():
            sections.setdefault(section, {}).update(keys)
        doc = tomlkit.document()
        for section, keys in sections.items():
            table = tomlkit.table()
            for key, value in keys.items():
                table[key] = value
            _nest(doc, section.split("."), table)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomlkit.dumps(doc))
        return self.config_path


def _nest(doc: tomlkit.TOMLDocument, parts: list[str], table: tomlkit.items.Table) -> None:
    container: tomlkit.TOMLDocument | tomlkit.items.Table = doc
    for part in parts[:-1]:
        if part not in container:
            container[part] = tomlkit.table(is_super_table=True)
        container = container[part]
    container[parts[-1]] = table


def process_gone(pid: int) -> bool:
    """Has ``pid`` exited (gone, or a zombie nobody reaped yet)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """One HTTP request to 127.0.0.1:``port``: (status, Content-Type, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 15.0,
               daemon: Daemon | None = None) -> None:
    """Poll ``condition()`` until it is true (a readiness signal: a file, a log line, a
    count); fail after ``timeout`` seconds saying ``what`` was awaited, with the daemon's
    log when one is given."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = f":\n{daemon.log()}" if daemon is not None else ""
            raise AssertionError(f"{what} not seen within {timeout}s{log}")
        time.sleep(0.02)


def client_context() -> ssl.SSLContext:
    """A TLS client that accepts any certificate (the bootstrap included): for tests of the
    channel, not of the PKI."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class Daemon:
    """A running ``elemta serve`` child process."""

    process: subprocess.Popen[bytes]
    setup: Setup
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sighup(self) -> None:
        os.kill(self.process.pid, signal.SIGHUP)

    def wait_for_log(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        """Block until ``text`` appears ``count`` times in the daemon's log."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged within {timeout}s:\n{self.log()}")
            time.sleep(0.05)


def elemta_command(*args: str) -> list[str]:
    """The ``elemta`` command of the interpreter running the tests."""
    return [sys.executable, "-m", "elemta_smtp", *args]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s: a test never leaves a process behind."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def in_shell(shell: str, command: list[str]) -> list[str]:
    """``command`` run by ``sh`` after the shell commands ``shell`` (``ulimit -n 100``,
    ``trap '' INT``): what they set (limits, ignored signals) is inherited across exec."""
    return ["sh", "-c", f'set -e; {shell}; exec "$@"', "sh", *command]


@contextmanager
def running_daemon(setup: Setup, env: Mapping[str, str] | None = None,
                   wait_ports: bool = True, shell: str | None = None) -> Iterator[Daemon]:
    """Start ``elemta serve -c <setup>`` and stop it (SIGTERM, then SIGKILL) afterwards;
    ``shell``: shell commands to run first (see ``in_shell``)."""
    log_path = setup.root / "daemon.log"
    command = elemta_command("serve", "-c", str(setup.config_path))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            in_shell(shell, command) if shell else command,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    daemon = Daemon(process, setup, log_path)
    try:
        if wait_ports:
            daemon.wait_for_log("elemta ready")
        yield daemon
    finally:
        stop_process(process)
