"""STARTTLS on a real Twisted TCP connection object over a socketpair: ``start_tls`` puts
elemta's TLS layer under the protocol (the in-memory layer tests are in
tests/unit/test_tlslayer.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactor

from elemta_smtp.net.tlslayer import ServerTLSLayer, start_tls
from tests.fakes import App, Client, ServerTLS


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_start_tls_switches_a_tcp_connection(sockets: tuple[socket.socket, socket.socket]) -> None:
    """start_tls puts the layer under the protocol, marks the connection TLS, and sends ciphertext only."""
    server_sock, client_sock = sockets
    app = App(greet=False)
    conn: Any = tcp.Connection(server_sock, app, MemoryReactor())  # type: ignore[no-untyped-call]
    conn.connected = True
    app.makeConnection(conn)  # type: ignore[no-untyped-call]
    start_tls(conn, ServerTLS())
    assert conn.TLS and isinstance(conn.protocol, ServerTLSLayer)
    assert ISSLTransport.providedBy(cast(object, conn))
    conn.write(b"250 after the handshake\r\n")  # routed through the layer and held
    client = Client()
    client.handshake()
    conn.protocol.dataReceived(client.outgoing())
    for _ in range(5):
        client.incoming(client_sock.recv(65536))
        out = client.outgoing()
        if not out:
            break
        conn.protocol.dataReceived(out)
    assert app.handshakes == 1
    assert conn.getHandle().get_protocol_version_name() == "TLSv1.3"
    assert client.received == b"250 after the handshake\r\n"
    client.send(b"EHLO c.example\r\n")
    conn.protocol.dataReceived(client.outgoing())
    assert app.received == [b"EHLO c.example\r\n"]
