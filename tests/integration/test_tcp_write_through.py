"""write_through: replies go straight to the socket when nothing is queued (no epoll round)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from elemta_smtp.net.tcp import write_through


@pytest.fixture
def pair() -> Iterator[tuple[Any, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    conn: Any = tcp.Connection(ours, Protocol(), MemoryReactor())  # type: ignore[no-untyped-call]
    conn.connected = True  # as tcp.Server sets it once accepted
    yield conn, theirs
    ours.close()
    theirs.close()


def test_write_goes_out_at_once_when_nothing_is_queued(pair: tuple[Any, socket.socket]) -> None:
    """With an empty buffer the bytes are sent in the call itself, nothing is queued."""
    conn, theirs = pair
    assert write_through(conn)
    conn.write(b"250 OK\r\n")
    assert theirs.recv(100) == b"250 OK\r\n"
    assert not conn._tempDataBuffer and not conn.dataBuffer


def test_write_queues_behind_queued_bytes(pair: tuple[Any, socket.socket]) -> None:
    """Bytes already queued go first: a later write is queued behind them, order kept."""
    conn, theirs = pair
    conn._tempDataBuffer.append(b"first ")
    conn._tempDataLen += 6
    assert write_through(conn)
    conn.write(b"second")
    assert conn._tempDataBuffer == [b"first ", b"second"]
    theirs.settimeout(0.01)
    with pytest.raises(TimeoutError):
        theirs.recv(100)


def test_write_under_starttls_goes_through_tls(pair: tuple[Any, socket.socket]) -> None:
    """Once TLS is on, plain text is never sent to the socket directly."""
    conn, theirs = pair
    assert write_through(conn)
    conn.TLS = True
    seen: list[bytes] = []
    conn.protocol = type("P", (), {"write": lambda self, data: seen.append(data)})()
    conn.write(b"secret")
    assert seen == [b"secret"]
    theirs.settimeout(0.01)
    with pytest.raises(TimeoutError):
        theirs.recv(100)


def test_no_tcp_connection_no_change() -> None:
    """A transport with no TCP connection under it is left alone."""
    transport: Any = StringTransport()  # type: ignore[no-untyped-call]
    assert not write_through(transport)
    transport.write(b"x")
    assert transport.value() == b"x"
