"""STARTTLS hygiene (RFC 3207, the CVE-2011-0411 class) and implicit TLS, on the
session and through the real adapter and elemta's own TLS layer (net/tlslayer.py)
with a real in-memory TLS handshake."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from elemta_smtp.net.tlslayer import ServerTLSLayer
from elemta_smtp.smtp import replies
from elemta_smtp.smtp.actions import Reply, StartTLS
from elemta_smtp.smtp.listener import SMTPConnection, SMTPServer
from elemta_smtp.smtp.session import Session, SessionSettings
from elemta_smtp.smtp.states import State
from tests.fakes import Client, FakeSink, ServerTLS

PEER = IPv4Address("TCP", "192.0.2.9", 40001)
SETTINGS = SessionSettings(hostname="mx.example.com", local_domains=frozenset({"example.com"}),
                           starttls_available=True)
INJECTION = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"


def greeted(tls: bool = False) -> Session:
    """A session after EHLO; ``tls``: on the implicit-TLS port, handshake done."""
    session = Session(SETTINGS, "192.0.2.9", implicit_tls=tls)
    session.start()
    if tls:
        session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    session.receive(b"EHLO c.example\r\n")
    return session


# --- the session alone ---------------------------------------------------------------


def test_starttls_reply_and_action() -> None:
    """STARTTLS is answered 220 2.0.0 (RFC 3207, RFC 3463), then the adapter is asked to start TLS."""
    session = greeted()
    [reply, start] = session.receive(b"STARTTLS\r\n")
    assert start == StartTLS()
    assert isinstance(reply, Reply)
    assert replies.code(reply.data) == 220
    assert reply.data.split(b" ")[1] == b"2.0.0"
    assert session.state is State.TLS_PENDING


def test_injected_commands_are_discarded() -> None:
    """Commands sent after STARTTLS in the same packet, or before the handshake, are never run."""
    session = greeted()
    assert session.receive(b"STARTTLS\r\n" + INJECTION) == [Reply(replies.READY_FOR_TLS), StartTLS()]
    assert session.receive(b"NOOP\r\n" + INJECTION) == []
    session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert session.receive(b"RCPT TO:<bob@example.com>\r\n") == [Reply(replies.NEED_MAIL)]


def test_state_forgotten_after_tls() -> None:
    """After the handshake the client must EHLO again: MAIL first is 503."""
    session = greeted()
    session.receive(b"STARTTLS\r\n")
    session.tls_started()
    assert session.state is State.INIT
    assert session.receive(b"MAIL FROM:<a@example.net>\r\n") == [Reply(replies.NEED_HELO)]
    [ehlo] = session.receive(b"EHLO c.example\r\n")
    assert isinstance(ehlo, Reply) and b"STARTTLS" not in ehlo.data


@pytest.mark.parametrize(("setup", "command", "expected"), [
    (b"", b"STARTTLS", replies.NEED_EHLO),
    (b"EHLO c\r\n", b"STARTTLS now", replies.SYNTAX_NO_PARAMETERS),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"STARTTLS", replies.TLS_IN_TRANSACTION),
], ids=["before-ehlo", "with-argument", "in-transaction"])
def test_starttls_refused(setup: bytes, command: bytes, expected: bytes) -> None:
    """STARTTLS needs EHLO first, no arguments and no mail transaction in progress."""
    session = Session(SETTINGS, "192.0.2.9")
    session.receive(setup)
    assert session.receive(command + b"\r\n") == [Reply(expected)]


def test_starttls_when_already_tls() -> None:
    """STARTTLS inside TLS is 503 5.5.1."""
    assert greeted(tls=True).receive(b"STARTTLS\r\n") == [Reply(replies.TLS_ALREADY_ACTIVE)]


def test_starttls_when_not_available() -> None:
    """Without a certificate STARTTLS is 502 (it was not advertised)."""
    session = Session(SessionSettings(hostname="mx.example.com"), "192.0.2.9")
    session.receive(b"EHLO c\r\n")
    assert session.receive(b"STARTTLS\r\n") == [Reply(replies.TLS_NOT_AVAILABLE)]


# --- a real TLS handshake through the adapter --------------------------------------------


class MemoryTransport(StringTransport):
    """A server transport that does on STARTTLS what ``tlslayer.start_tls`` does to a
    Twisted TCP connection: elemta's ``ServerTLSLayer`` goes under the protocol, the
    protocol's writes and closes go through it, and what is read goes to it. The
    producer stays with this transport, as it stays with the TCP connection. Ciphertext
    is written to ``wire``."""

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)  # type: ignore[no-untyped-call]
        self.protocol: Any = None
        self.tls_layer: Any = None
        self.wire: Any = StringTransport()  # type: ignore[no-untyped-call]

    def startTLS(self, creator: IOpenSSLServerConnectionCreator, normal: bool = True) -> None:
        layer = ServerTLSLayer(creator, Protocol())
        layer.makeConnection(self.wire)  # the SMTP protocol is connected already:
        layer.wrappedProtocol = self.protocol  # it is put above the layer, not connected again
        self.tls_layer = layer
        self.getHandle = layer.getHandle

    def write(self, data: bytes) -> None:
        if self.tls_layer is not None:
            self.tls_layer.write(data)
        else:
            super().write(data)  # type: ignore[no-untyped-call]

    def loseConnection(self) -> None:
        if self.tls_layer is not None:
            self.tls_layer.loseConnection()
        else:
            super().loseConnection()  # type: ignore[no-untyped-call]

    def deliver(self, data: bytes) -> None:
        """Bytes from the client; a paused transport would not read them."""
        assert self.producerState == "producing", "the server stopped reading"
        if self.tls_layer is not None:
            self.tls_layer.dataReceived(data)
        else:
            self.protocol.dataReceived(data)

    def plaintext(self) -> bytes:
        value: bytes = self.value()  # type: ignore[no-untyped-call]
        self.clear()  # type: ignore[no-untyped-call]
        return value

    def ciphertext(self) -> bytes:
        value: bytes = self.wire.value()
        self.wire.clear()
        return value


def pump(client: Client, send: Any, receive: Any) -> None:
    """Move bytes both ways until nothing moves."""
    for _ in range(20):
        outgoing = client.outgoing()
        if outgoing:
            send(outgoing)
        incoming = receive()
        client.incoming(incoming)
        if not outgoing and not incoming:
            return


def plain_connection(sink: FakeSink, clock: Clock | None = None) -> tuple[SMTPConnection, MemoryTransport]:
    clock = clock or Clock()
    server = SMTPServer(SETTINGS, sink, ServerTLS(), clock)
    connection: Any = server.plain_factory().buildProtocol(PEER)
    transport = MemoryTransport()
    transport.protocol = connection
    connection.makeConnection(transport)
    return connection, transport


def test_real_starttls_discards_injection_and_resets_state() -> None:
    """Through the adapter and a real handshake: injected plaintext is never run, and EHLO is needed again."""
    sink = FakeSink()
    _, transport = plain_connection(sink)
    transport.deliver(b"EHLO c.example\r\n")
    assert b"250 STARTTLS\r\n" in transport.plaintext()
    transport.deliver(b"STARTTLS\r\n" + INJECTION + b"Subject: forged\r\n\r\n.\r\n")
    assert transport.plaintext() == replies.READY_FOR_TLS
    assert isinstance(transport.tls_layer, ServerTLSLayer)
    assert transport.producerState == "producing"
    client = Client()
    client.handshake()
    pump(client, transport.deliver, transport.ciphertext)
    assert client.tls.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    client.send(b"MAIL FROM:<a@example.net>\r\n")
    pump(client, transport.deliver, transport.ciphertext)
    assert client.received == replies.NEED_HELO
    assert sink.writers == []
    client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.com>\r\n"
                b"DATA\r\nSubject: real\r\n\r\n.\r\n")
    pump(client, transport.deliver, transport.ciphertext)
    assert b"STARTTLS" not in client.received
    assert b"250 2.0.0 OK: queued as " in client.received
    [writer] = sink.writers
    assert b" with ESMTPS id " in writer.chunks[0]
    assert b"(using TLSv1." in writer.chunks[0]


def test_real_implicit_tls() -> None:
    """On the implicit-TLS port the greeting comes over TLS and STARTTLS is neither offered nor allowed."""
    sink = FakeSink()
    clock = Clock()
    server = SMTPServer(SETTINGS, sink, ServerTLS(), clock)
    factory: Any = server.implicit_tls_factory()
    tls_protocol = factory.buildProtocol(PEER)
    wire: Any = StringTransport(peerAddress=PEER)  # type: ignore[no-untyped-call]
    tls_protocol.makeConnection(wire)
    assert wire.value() == b""  # nothing in plaintext before the handshake
    assert wire.producerState == "producing"  # the buffered greeting must not stop reading

    def ciphertext() -> bytes:
        clock.advance(0)
        value: bytes = wire.value()
        wire.clear()
        return value

    def send(data: bytes) -> None:
        assert wire.producerState == "producing", "the server stopped reading"
        tls_protocol.dataReceived(data)

    client = Client()
    client.handshake()
    pump(client, send, ciphertext)
    assert client.received == replies.greeting("mx.example.com")
    client.received = b""
    client.send(b"EHLO c.example\r\nSTARTTLS\r\n")
    pump(client, send, ciphertext)
    assert b"STARTTLS" not in client.received.split(b"\r\n250 ENHANCEDSTATUSCODES\r\n")[0]
    assert client.received.endswith(b"250 ENHANCEDSTATUSCODES\r\n" + replies.TLS_ALREADY_ACTIVE)
    assert server.active_connections == 1
    assert wire.producerState == "producing"
    assert wire.producer is not None  # write backpressure is wired up after the handshake


def test_starttls_without_a_handshake_is_dropped_after_the_idle_timeout() -> None:
    """A client that gets 220 to STARTTLS and never starts the handshake is dropped (no reply:
    it could only wait for TLS) once idle_timeout has passed since STARTTLS."""
    clock = Clock()
    _, transport = plain_connection(FakeSink(), clock)
    transport.deliver(b"EHLO c.example\r\n")
    clock.advance(100)
    transport.deliver(b"STARTTLS\r\n")
    clock.advance(SETTINGS.idle_timeout - 1)
    assert not transport.wire.disconnected
    clock.advance(1)
    assert transport.wire.disconnected  # aborted through the TLS layer
    assert transport.ciphertext() == b""


def test_implicit_tls_without_a_handshake_is_dropped_after_the_idle_timeout() -> None:
    """On the implicit-TLS port a client that never starts its handshake is dropped after
    idle_timeout; its greeting, held for the handshake, is never sent in plaintext."""
    clock = Clock()
    server = SMTPServer(SETTINGS, FakeSink(), ServerTLS(), clock)
    tls_protocol: Any = server.implicit_tls_factory().buildProtocol(PEER)
    wire: Any = StringTransport(peerAddress=PEER)  # type: ignore[no-untyped-call]
    tls_protocol.makeConnection(wire)
    clock.advance(SETTINGS.idle_timeout - 1)
    assert not wire.disconnected
    clock.advance(1)
    assert wire.disconnected and wire.value() == b""
    tls_protocol.connectionLost(Failure(ConnectionAborted()))  # type: ignore[no-untyped-call]
    assert server.active_connections == 0
