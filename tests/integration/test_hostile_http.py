"""Hostile HTTP clients against the real daemon's HTTP-01 listener: trickling clients, floods
of idle connections, a low open-files limit (SMTP must keep working), tokens that name a
folder, requests without Host."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elemta_smtp.cache.challenges import MAX_CONNECTIONS, REQUEST_DEADLINE
from elemta_smtp.net.descriptors import OTHER_DESCRIPTORS
from elemta_smtp.smtp import replies
from tests.integration.test_hostile import HOST, greeted, maildir, open_data
from tests.support import Daemon, Setup, running_daemon, wait_until

CHALLENGE = "/.well-known/acme-challenge/"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The default daemon (max_connections 1000, the machine's open-files limit)."""
    setup = Setup(tmp_path_factory.mktemp("hostile-http"))
    setup.write()
    with running_daemon(setup) as d:
        yield d


def challenge_dir(setup: Setup) -> Path:
    return setup.cache_dir / "webroot" / ".well-known" / "acme-challenge"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as a close)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def exchange(port: int, raw: bytes) -> bytes:
    """Send one raw request, return the whole answer (the server closes after it)."""
    with connect(port) as sock:
        sock.sendall(raw)
        return read_all(sock)


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def keep_alive_404(sock: socket.socket) -> bool:
    """One keep-alive request on ``sock``; True if a whole 404 came back (the connection stays)."""
    sock.sendall(f"GET {CHALLENGE}nosuchtoken HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
    data = b""
    try:
        while not data.endswith(b"not found\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
    except (ConnectionResetError, TimeoutError):
        return False
    return data.startswith(b"HTTP/1.1 404 ")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the deadline ---------------------------------------------------------------------------

def test_trickling_client_is_dropped_at_the_deadline(daemon: Daemon) -> None:
    """A client sending one byte per second (each byte would restart an idle timeout) is
    closed REQUEST_DEADLINE (10 s) after it connected, without an answer."""
    request = f"GET {CHALLENGE}abc HTTP/1.1\r\nHost: a.test\r\nX-Pad: {'a' * 100}\r\n".encode()
    with connect(daemon.setup.http_port) as sock:
        started = time.monotonic()
        sock.settimeout(1.0)
        received, closed_after = b"", None
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(4096)  # waits the second between bytes
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                closed_after = time.monotonic() - started
                break
            received += chunk
            if time.monotonic() - started > REQUEST_DEADLINE + 3:
                break
    assert closed_after is not None, "still connected 13 s after connecting"
    assert REQUEST_DEADLINE - 1 < closed_after < REQUEST_DEADLINE + 2
    assert received == b""


# --- the connection cap ----------------------------------------------------------------------

def test_connections_beyond_the_cap_are_closed_at_once_and_slots_come_back(daemon: Daemon) -> None:
    """With MAX_CONNECTIONS (64) keep-alive HTTP connections open, further ones are closed at once
    without an answer and the refusal is logged once; when one closes, a new one is served."""
    port = daemon.setup.http_port
    held = [connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        assert all(keep_alive_404(sock) for sock in held)
        for _ in range(10):
            with connect(port) as extra:
                started = time.monotonic()
                assert not keep_alive_404(extra)
                assert time.monotonic() - started < 1
        daemon.wait_for_log("http-01 listener full")
        assert daemon.log().count("http-01 listener full") == 1
        held.pop().close()

        def one_more_served() -> bool:
            with connect(port) as sock:
                return keep_alive_404(sock)

        wait_until(one_more_served, "a new HTTP connection served after one closed", timeout=3)
        daemon.wait_for_log("http-01 listener accepting again")
    finally:
        for sock in held:
            sock.close()


# --- descriptors: SMTP first -------------------------------------------------------------------

def accept_queue(port: int) -> int:
    """Connections waiting in the kernel for the listener on 127.0.0.1:``port`` to accept them."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # LISTEN
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no listener on {HOST}:{port}")


def still_open(sock: socket.socket) -> bool:
    """Has the server not closed this connection (nothing to read, no EOF)?"""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:  # would block: open
        return True
    except ConnectionResetError:
        return False


LOW_LIMIT = 150
SMTP_MAX = 20


@pytest.fixture(scope="module")
def starved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """An open-files limit of 150 (soft and hard, so it cannot be raised), max_connections 20."""
    setup = Setup(tmp_path_factory.mktemp("hostile-http-fd"))
    setup.write({"server": {"max_connections": SMTP_MAX}})
    with running_daemon(setup, shell=f"ulimit -n {LOW_LIMIT}") as d:
        yield d


def test_idle_http_clients_cannot_take_the_descriptors_smtp_needs(starved: Daemon) -> None:
    """Under a 150-descriptor limit, 300 idle HTTP connections get only what SMTP's reserve
    (max_connections + OTHER_DESCRIPTORS) leaves; the rest are closed at once; then all 20 SMTP
    connections are greeted and a message is delivered."""
    setup = starved.setup
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            idle.append(connect(setup.http_port))
        drained = True
        try:
            wait_until(lambda: accept_queue(setup.http_port) == 0, "HTTP backlog accepted", timeout=5)
        except TimeoutError:
            drained = False
        wires = [greeted(setup.smtp_port) for _ in range(SMTP_MAX)]
        try:
            open_data(wires[0], ["survivor@example.com"])
            wires[0].send(b"Subject: still here\r\n\r\nSMTP works.\r\n")
            assert wires[0].command(b".").startswith(b"250 ")
            assert all(wire.command(b"NOOP") == replies.OK for wire in wires)
        finally:
            for wire in wires:
                wire.close()
        assert drained, "the HTTP listener stopped accepting (descriptors exhausted?)"
        kept = sum(still_open(sock) for sock in idle)
        # the daemon's own descriptors at start (std streams, listeners, epoll...) come off too
        assert 0 < kept <= LOW_LIMIT - SMTP_MAX - OTHER_DESCRIPTORS - 10
    finally:
        for sock in idle:
            sock.close()
    assert len(maildir(setup, "survivor")) == 1


def test_low_limit_is_reported_at_start(starved: Daemon) -> None:
    """The start-up log says how few HTTP-01 connections the limit allows and what to raise."""
    line = next(line for line in starved.log().splitlines() if "HTTP-01 connections" in line)
    assert f"open-files limit ({LOW_LIMIT})" in line
    assert "LimitNOFILE" in line and "max_connections" in line


# --- what a request may ask ---------------------------------------------------------------------

def test_token_naming_a_folder_is_404_and_leaks_no_descriptor(daemon: Daemon) -> None:
    """A token that is a folder in the challenge directory gets 404 (not 500 with a traceback),
    and thirty such requests leave the daemon's open descriptors where they were."""
    setup = daemon.setup
    (challenge_dir(setup) / "foldertoken").mkdir(parents=True, exist_ok=True)
    raw = f"GET {CHALLENGE}foldertoken HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode()
    assert status(exchange(setup.http_port, raw)) == 404
    before = open_fds(daemon.pid)
    for _ in range(30):
        response = exchange(setup.http_port, raw)
        assert status(response) == 404 and b"Traceback" not in response
    assert open_fds(daemon.pid) <= before + 2
    assert "Traceback" not in daemon.log()


def test_http11_without_host_is_400_and_http10_without_host_is_served(daemon: Daemon) -> None:
    """HTTP/1.1 needs a Host header (400 without one, or with two); HTTP/1.0 does not."""
    setup = daemon.setup
    challenge_dir(setup).mkdir(parents=True, exist_ok=True)
    (challenge_dir(setup) / "realtoken").write_bytes(b"realtoken.thumbprint")
    no_host = exchange(setup.http_port, f"GET {CHALLENGE}realtoken HTTP/1.1\r\n\r\n".encode())
    assert status(no_host) == 400 and b"realtoken.thumbprint" not in no_host
    two = exchange(setup.http_port,
                   f"GET {CHALLENGE}realtoken HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".encode())
    assert status(two) == 400
    old = exchange(setup.http_port, f"GET {CHALLENGE}realtoken HTTP/1.0\r\n\r\n".encode())
    assert status(old) == 200 and old.endswith(b"\r\n\r\nrealtoken.thumbprint")


def test_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """Started with a soft limit of 100 under a hard limit of 400, the daemon runs with 400 and
    says so (the soft limit alone would not cover max_connections)."""
    setup = Setup(tmp_path)
    setup.write()
    with running_daemon(setup, shell="ulimit -S -n 100; ulimit -H -n 400") as d:
        limits = Path(f"/proc/{d.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3:5] == ["400", "400"]
        assert "open files limit raised from 100 to 400" in d.log()
