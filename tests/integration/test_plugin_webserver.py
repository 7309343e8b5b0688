"""The certbot plugin's own HTTP-01 listener (certbot_elemta/_internal/webserver.py) on a real
socket follows the daemon's request rules: folder tokens are 404 without leaking descriptors,
HTTP/1.1 needs a Host, a connection has a total deadline, and there is a connection cap."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certbot_elemta._internal.webserver import ChallengeServer
from elemta_smtp.units import Address
from tests.fakes import http01_request as daemon_request
from tests.support import wait_until

PREFIX = "/.well-known/acme-challenge/"


@pytest.fixture
def challenge_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    folder.mkdir(parents=True)
    (folder / "tok").write_bytes(b"tok.thumb")
    return folder


@pytest.fixture
def server(challenge_dir: Path) -> Iterator[ChallengeServer]:
    """Deadline 1 s and at most 2 connections, so the bounds show quickly."""
    srv = ChallengeServer(Address("127.0.0.1", 0), challenge_dir, deadline=1.0, max_connections=2)
    yield srv
    srv.stop()


def exchange(port: int, raw: bytes) -> bytes:
    """One raw request; everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def test_token_naming_a_folder_is_404_and_leaks_no_descriptor(
        challenge_dir: Path, server: ChallengeServer) -> None:
    """A folder named like a token is 404, and twenty requests leave no descriptor open."""
    (challenge_dir / "folder").mkdir()
    raw = f"GET {PREFIX}folder HTTP/1.0\r\n\r\n".encode()
    assert status(exchange(server.port, raw)) == 404
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert status(exchange(server.port, raw)) == 404
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_http11_without_host_is_400_and_http10_is_served(server: ChallengeServer) -> None:
    """HTTP/1.1 with no Host (or two) is 400; HTTP/1.0 without one gets the answer."""
    assert status(exchange(server.port, f"GET {PREFIX}tok HTTP/1.1\r\n\r\n".encode())) == 400
    two = f"GET {PREFIX}tok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".encode()
    assert status(exchange(server.port, two)) == 400
    old = exchange(server.port, f"GET {PREFIX}tok HTTP/1.0\r\n\r\n".encode())
    assert status(old) == 200 and old.endswith(b"\r\n\r\ntok.thumb")


def test_trickling_client_is_cut_at_the_deadline(server: ChallengeServer) -> None:
    """A request sent a byte every 0.2 s is cut 1 s (the deadline) after the connection opened."""
    request = f"GET {PREFIX}tok HTTP/1.1\r\nHost: a\r\nX: {'y' * 40}\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.2) as sock:
        started, closed_after = time.monotonic(), None
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "never closed"
    assert 0.8 < closed_after < 2.0


def test_connections_over_the_cap_are_closed_at_once(server: ChallengeServer) -> None:
    """With two connections open (max_connections = 2), a third is closed unanswered at once;
    once one closes, a request is served again."""
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET ")  # an unfinished request keeps its handler busy
        # connections are accepted in order: the third is judged after both were admitted
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(f"GET {PREFIX}tok HTTP/1.0\r\n\r\n".encode())
            assert extra.recv(4096) == b""
        held.pop().close()
        served: list[bytes] = []

        def one_served() -> bool:
            served.append(exchange(server.port, f"GET {PREFIX}tok HTTP/1.0\r\n\r\n".encode()))
            return served[-1] != b""

        wait_until(one_served, "a request served after a slot was freed", timeout=3)
        assert status(served[-1]) == 200
    finally:
        for sock in held:
            sock.close()


def _parse(response: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


_COMPARED = (b"content-type", b"content-length", b"cache-control", b"allow")


@pytest.mark.parametrize("raw", [
    pytest.param(f"GET {PREFIX}tok HTTP/1.0\r\n\r\n", id="http10-answer"),
    pytest.param(f"GET {PREFIX}tok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", id="answer"),
    pytest.param(f"HEAD {PREFIX}tok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", id="head"),
    pytest.param(f"GET {PREFIX}nosuch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                 id="unknown-token"),
    pytest.param("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", id="root"),
    pytest.param(f"GET {PREFIX}%2e%2e%2fsecret HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                 id="encoded-dotdot"),
    pytest.param(f"POST {PREFIX}tok HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n", id="post"),
    pytest.param(f"BREW {PREFIX}tok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                 id="unknown-method"),
    pytest.param(f"GET {PREFIX}tok HTTP/1.1\r\n\r\n", id="no-host"),
    pytest.param(f"GET {PREFIX}tok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
])
def test_plugin_listener_answers_exactly_like_the_daemon(challenge_dir: Path,
                                                         server: ChallengeServer, raw: str) -> None:
    """The same raw request gets the same status, headers and body from the plugin's listener
    (real socket) as from the daemon's Twisted site: one rule, cache.challenges.answer_request."""
    daemon_status, daemon_headers, daemon_body = daemon_request(challenge_dir.parent.parent,
                                                                raw.encode())
    plugin_status, plugin_headers, plugin_body = _parse(exchange(server.port, raw.encode()))
    assert plugin_status == daemon_status
    assert plugin_body == daemon_body
    assert {k: v for k, v in plugin_headers.items() if k in _COMPARED} == \
        {k: v for k, v in daemon_headers.items() if k in _COMPARED}
