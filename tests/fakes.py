"""The shared test doubles: an in-memory message sink and SMTP server harness, an in-memory
TLS server (connection creator) and client on pyOpenSSL memory BIOs, one raw request to
the HTTP-01 site, and what certbot prints when a challenge fails. No sockets, no
processes: unit tests use these; integration tests may too."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from elemta_smtp.acme.http01 import http01_site
from elemta_smtp.smtp.listener import SMTPConnection, SMTPServer
from elemta_smtp.smtp.session import SessionSettings

# --- SMTP: sink and server harness ---------------------------------------------------

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
SETTINGS = SessionSettings(hostname="mx.example.com", max_message_size=5000, idle_timeout=60.0,
                           local_domains=frozenset({"example.com"}), max_connections=2)
ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
BODY = b"Subject: hi\r\n\r\nHello\r\n"


class FakeWriter:
    def __init__(self, sink: FakeSink, recipients: Sequence[str]) -> None:
        self.sink = sink
        self.recipients = tuple(recipients)
        self.chunks: list[bytes] = []
        self.committed: Deferred[None] | None = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.sink.write_error is not None:
            raise self.sink.write_error
        self.chunks.append(data)

    def commit(self) -> Deferred[None]:
        self.committed = Deferred()
        if self.sink.auto_commit:
            self.committed.callback(None)
        return self.committed

    def abort(self) -> None:
        self.aborted = True


class FakeSink:
    """An in-memory MessageSink; commits at once unless ``auto_commit`` is False."""

    def __init__(self, auto_commit: bool = True) -> None:
        self.auto_commit = auto_commit
        self.writers: list[FakeWriter] = []
        self.begin_error: Exception | None = None
        self.write_error: Exception | None = None

    def begin(self, recipients: Sequence[str]) -> FakeWriter:
        if self.begin_error is not None:
            raise self.begin_error
        writer = FakeWriter(self, recipients)
        self.writers.append(writer)
        return writer


class Harness:
    def __init__(self, settings: SessionSettings = SETTINGS, auto_commit: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.sink = FakeSink(auto_commit)
        self.server = SMTPServer(settings, self.sink, None, self.clock)

    def connect(self) -> tuple[SMTPConnection, Any]:
        factory: Any = self.server.plain_factory()
        protocol = factory.buildProtocol(PEER)
        assert isinstance(protocol, SMTPConnection)
        transport = fake_transport(StringTransportWithDisconnection)
        transport.protocol = protocol
        wired: Any = protocol
        wired.makeConnection(transport)
        return protocol, transport


def fake_transport(kind: type[StringTransport] = StringTransport) -> Any:
    """An in-memory transport (Twisted's test transports are not annotated)."""
    return kind(peerAddress=PEER)


def take(transport: Any) -> bytes:
    value = transport.value()
    transport.clear()
    return bytes(value)


# --- TLS in memory -------------------------------------------------------------------

@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """An IOpenSSLServerConnectionCreator with a fresh self-signed ECDSA certificate."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.com")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.example.com")]), critical=False)
                .sign(key, hashes.SHA256()))
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.use_certificate(cert)
        self.context.use_privatekey(key)

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self.context, None)


class TLSClient:
    """A TLS client on memory BIOs (pyOpenSSL), not verifying the test certificate."""

    def __init__(self) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        self.tls = SSL.Connection(context, None)
        self.tls.set_connect_state()
        self.received = b""

    def handshake(self) -> None:
        with contextlib.suppress(SSL.WantReadError):
            self.tls.do_handshake()

    def outgoing(self) -> bytes:
        try:
            return self.tls.bio_read(1 << 20)
        except SSL.WantReadError:
            return b""

    def incoming(self, data: bytes) -> None:
        if data:
            self.tls.bio_write(data)
        self.handshake()
        while True:
            try:
                self.received += self.tls.recv(1 << 20)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                return

    def send(self, data: bytes) -> None:
        self.tls.send(data)


#: the name the SMTP/TLS tests used first
Client = TLSClient


# --- an application above a TLS layer --------------------------------------------

GREETING = b"220 mx.example.com ESMTP\r\n"


@implementer(IHandshakeListener)
class App(Protocol):
    """Records what the TLS layer hands the application; greets like an SMTP server."""

    transport: Any

    def __init__(self, greet: bool = True) -> None:
        self.greet = greet
        self.received: list[bytes] = []
        self.handshakes = 0
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greet:
            self.transport.write(GREETING)

    def handshakeCompleted(self) -> None:
        self.handshakes += 1

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost = reason


# --- the HTTP-01 site ----------------------------------------------------------------

def http01_request(webroot: Path, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one raw HTTP request to a fresh site; return status, headers, body."""
    return site_request(http01_site(webroot, reactor=cast(IReactorTime, Clock())), raw)


def site_request(site: Site, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one raw HTTP request to ``site`` on a new connection; return status, headers, body."""
    peer = IPv4Address("TCP", "192.0.2.7", 40000)
    protocol = site.buildProtocol(peer)  # type: ignore[no-untyped-call]
    assert protocol is not None
    transport = StringTransport(peerAddress=peer)  # type: ignore[no-untyped-call]
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    output: bytes = transport.value()  # type: ignore[no-untyped-call]
    head, _, body = output.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    protocol.connectionLost(None)
    return int(status_line.split()[1]), headers, body


# --- certbot's own words ---------------------------------------------------------------

#: What certbot 5.8 prints when the CA cannot fetch an HTTP-01 answer (seen against Pebble).
CERTBOT_STDOUT = """Account registered.
Requesting a certificate for mail.example.com

Certbot failed to authenticate some domains (authenticator: elemta). The Certificate \
Authority reported these problems:
  Identifier: mail.example.com
  Type:   unauthorized
  Detail: Invalid response from http://mail.example.com/.well-known/acme-challenge/abc: \
returned 404

Hint: The Certificate Authority could not download the challenge answers from
http://<domain>/.well-known/acme-challenge/, served by elemta on :80.

"""
CERTBOT_STDERR = """Saving debug log to /var/lib/elemta/certbot/logs/letsencrypt.log
Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile \
/var/lib/elemta/certbot/logs/letsencrypt.log or re-run Certbot with -v for more details.
"""
