"""The lean server TLS layer (tlslayer.py) with a real in-memory handshake: held
early writes, pipelined records, close_notify, TLS errors, producers, STARTTLS."""

from __future__ import annotations

from typing import Any, cast

import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from elemta_smtp.net.tlslayer import ServerTLSFactory, start_tls, write_and_close
from tests.fakes import GREETING, App, Client, ServerTLS


class CountingTransport(StringTransport):
    """A StringTransport that also keeps each write (one write = one socket send)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)  # type: ignore[no-untyped-call]


class Link:
    """A ServerTLSLayer on a StringTransport and a pyOpenSSL client, moved by hand."""

    def __init__(self, app: App | None = None) -> None:
        self.app = app or App()
        self.creator = ServerTLS()
        factory = Factory.forProtocol(lambda: self.app)
        self.layer = cast(Any, ServerTLSFactory(self.creator, factory).buildProtocol(None))
        self.wire: Any = CountingTransport()
        self.layer.makeConnection(self.wire)
        self.client = Client()

    def to_server(self) -> None:
        data = self.client.outgoing()
        if data:
            self.layer.dataReceived(data)

    def to_client(self) -> None:
        value: bytes = self.wire.value()
        self.wire.clear()
        self.client.incoming(value)

    def handshake(self) -> None:
        self.client.handshake()
        for _ in range(5):
            self.to_server()
            self.to_client()


@pytest.fixture
def link() -> Link:
    return Link()


def test_early_write_waits_for_the_handshake(link: Link) -> None:
    """The implicit-TLS greeting is held (nothing in plaintext) and arrives once, after the handshake."""
    assert link.wire.value() == b""
    link.handshake()
    assert link.client.received == GREETING
    assert link.app.handshakes == 1
    assert link.layer.getHandle().get_protocol_version_name() == "TLSv1.3"
    assert link.wire.producerState == "producing"


def test_pipelined_records_in_one_packet_are_all_delivered(link: Link) -> None:
    """Two TLS records in one read are both decrypted and handed on (OpenSSL returns one per recv)."""
    link.handshake()
    link.client.send(b"EHLO c.example\r\n")
    link.client.send(b"MAIL FROM:<a@example.net>\r\n")
    link.to_server()
    assert b"".join(link.app.received) == b"EHLO c.example\r\nMAIL FROM:<a@example.net>\r\n"


def test_large_reply_is_sent_whole(link: Link) -> None:
    """A write larger than one read of OpenSSL's buffer reaches the client complete."""
    link.handshake()
    link.client.received = b""
    big = b"250-" + b"x" * 200_000 + b"\r\n"
    link.layer.write(big)
    link.to_client()
    assert link.client.received == big


def test_lose_connection_sends_close_notify_at_once(link: Link) -> None:
    """loseConnection writes what is pending, then close_notify, and closes without waiting for the peer."""
    link.handshake()
    link.layer.write(b"221 bye\r\n")
    link.layer.loseConnection()
    assert link.wire.disconnecting and not link.wire.disconnected  # closed, not aborted
    link.layer.write(b"dropped\r\n")
    link.to_client()
    assert link.client.received.endswith(b"221 bye\r\n")
    with pytest.raises(SSL.ZeroReturnError):
        link.client.tls.recv(100)


def test_write_and_close_sends_the_reply_and_close_notify_together(link: Link) -> None:
    """A last reply and close_notify leave in one write to TCP, and TCP closes in order."""
    link.handshake()
    link.to_client()
    link.wire.writes.clear()
    write_and_close(link.layer, b"221 bye\r\n")
    assert len(link.wire.writes) == 1
    assert link.wire.disconnecting and not link.wire.disconnected
    link.to_client()
    assert link.client.received.endswith(b"221 bye\r\n")
    with pytest.raises(SSL.ZeroReturnError):
        link.client.tls.recv(100)


def test_write_and_close_before_the_handshake_waits_for_it() -> None:
    """Before the handshake the reply is held like any early write, then sent with close_notify."""
    link = Link(App(greet=False))
    write_and_close(link.layer, b"421 busy\r\n")
    assert link.wire.value() == b"" and not link.wire.disconnected
    link.handshake()
    assert link.client.received == b"421 busy\r\n"
    assert link.wire.disconnecting


def test_write_and_close_without_tls_writes_then_closes() -> None:
    """On a plain transport the reply is written, then the connection closed."""
    wire: Any = StringTransport()  # type: ignore[no-untyped-call]
    write_and_close(wire, b"221 bye\r\n")
    assert wire.value() == b"221 bye\r\n"
    assert wire.disconnecting


def test_close_before_handshake_without_writes_aborts() -> None:
    """A connection closed before its handshake with nothing to say is aborted, not left waiting."""
    link = Link(App(greet=False))
    link.layer.loseConnection()
    assert link.wire.disconnected  # StringTransport.abortConnection sets it


def test_close_before_handshake_with_a_reply_waits_for_it() -> None:
    """A reply written before the handshake (a 421 refusal) is delivered, then TLS is closed."""
    link = Link()
    link.layer.loseConnection()
    assert not link.wire.disconnecting
    link.handshake()
    assert link.client.received == GREETING
    assert link.wire.disconnecting
    assert link.app.handshakes == 0  # the application already gave up on it


def test_not_tls_is_closed_and_reported(link: Link) -> None:
    """Plain SMTP on the TLS port: an orderly close (not an RST that could beat an alert), nothing
    reaches the application, the SSL error is the reason."""
    link.layer.dataReceived(b"EHLO c.example\r\n")
    assert link.wire.disconnecting and not link.wire.disconnected
    link.layer.dataReceived(b"RCPT TO:<a@example.com>\r\n")
    link.layer.connectionLost(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]
    assert link.app.received == []
    assert link.app.lost is not None and link.app.lost.check(SSL.Error)  # type: ignore[no-untyped-call]
    assert link.app.handshakes == 0


def test_close_during_handshake_is_not_clean(link: Link) -> None:
    """A client leaving mid-handshake is reported as a lost connection, not a clean close."""
    link.client.handshake()
    link.to_server()
    link.layer.connectionLost(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]
    assert link.app.lost is not None and link.app.lost.check(ConnectionLost)  # type: ignore[no-untyped-call]
    assert "during the TLS handshake" in link.app.lost.getErrorMessage()


def test_client_close_notify_is_answered_and_closes(link: Link) -> None:
    """The client's close_notify gets ours back and the TCP connection is closed."""
    link.handshake()
    link.client.tls.shutdown()
    link.to_server()
    assert link.wire.disconnecting
    link.to_client()
    assert link.client.tls.get_shutdown() & SSL.RECEIVED_SHUTDOWN


def test_producer_goes_to_the_tcp_transport(link: Link) -> None:
    """The application's producer is registered with the transport below; pause/resume stop/start reading."""
    link.handshake()
    link.layer.registerProducer(link.app, True)
    assert link.wire.producer is link.app
    link.layer.pauseProducing()
    assert link.wire.producerState == "paused"
    link.layer.resumeProducing()
    assert link.wire.producerState == "producing"
    link.layer.unregisterProducer()
    assert link.wire.producer is None


def test_addresses_come_from_below(link: Link) -> None:
    """getPeer/getHost are the TCP connection's."""
    assert link.layer.getPeer() == link.wire.getPeer()
    assert link.layer.getHost() == link.wire.getHost()


def test_start_tls_on_other_transports_uses_theirs() -> None:
    """A transport that is not a Twisted TCP connection (a test double) runs its own startTLS."""
    calls: list[object] = []

    class Double:
        def startTLS(self, creator: object) -> None:
            calls.append(creator)

    creator = ServerTLS()
    start_tls(Double(), creator)
    assert calls == [creator]


# --- output OpenSSL queues while reading ------------------------------------------------


def tls12_link() -> Link:
    """A Link whose client speaks TLS 1.2 at most (renegotiation exists only there)."""
    link = Link()
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    link.client.tls = SSL.Connection(context, None)
    link.client.tls.set_connect_state()
    return link


def test_renegotiation_gets_the_no_renegotiation_alert_at_once() -> None:
    """A TLS 1.2 renegotiation (a record with no application data) is answered at once with the
    no_renegotiation alert OpenSSL queued; it is not left in the BIO until the next reply."""
    link = tls12_link()
    link.handshake()
    assert link.layer.getHandle().get_protocol_version_name() == "TLSv1.2"
    link.to_client()
    assert link.client.tls.renegotiate()
    link.client.handshake()
    link.to_server()
    alert = link.wire.value()
    assert alert != b""
    with pytest.raises(SSL.Error, match="no renegotiation"):
        link.client.incoming(alert)
    assert link.app.received == []


def test_nothing_is_sent_when_a_read_queues_nothing(link: Link) -> None:
    """A record of application data that the application does not answer sends nothing back."""
    link.handshake()
    link.to_client()
    link.wire.writes.clear()
    link.client.send(b"MAIL FROM:<a@example.net>\r\n")
    link.to_server()
    assert link.app.received == [b"MAIL FROM:<a@example.net>\r\n"]
    assert link.wire.writes == []
