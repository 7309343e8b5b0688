"""Stock Twisted ESMTP (``twisted.mail.smtp.ESMTP``) as a benchmark peer:
STARTTLS on the plain port, implicit TLS on the TLS port, and an
``IMessageDelivery`` whose messages are stored as durably as elemta stores
them, written in the reactor's thread pool so fsync never blocks the reactor.

The only change to the stock protocol is TCP_NODELAY on each connection
(Twisted leaves Nagle on; see shared notes: with it, TLS replies wait ~40 ms
for delayed ACKs and the comparison would be about Nagle, not the server)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import cast

from twisted.internet import defer, endpoints, protocol, ssl, threads
from twisted.internet.interfaces import IAddress
from twisted.internet.posixbase import PosixReactorBase
from twisted.mail import smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP
from twisted.python.failure import Failure
from zope.interface import implementer

from benchmarks.certs import HOSTNAME
from benchmarks.durable import DurableMaildir
from benchmarks.peercli import READY, PeerArgs, parse_peer_args


@implementer(IMessageSMTP)
class DurableMessage:
    """One message: lines are collected, then stored in a thread at end of data."""

    def __init__(self, maildir: DurableMaildir, reactor: PosixReactorBase) -> None:
        self.maildir = maildir
        self.reactor = reactor
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[str]:
        self.lines.append(b"")
        data = b"\n".join(self.lines)
        self.lines = []
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         self.maildir.deliver, data)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(IMessageDelivery)
class DurableDelivery:
    """Accept every sender and recipient; each message goes to one Maildir."""

    def __init__(self, maildir: DurableMaildir, reactor: PosixReactorBase) -> None:
        self.maildir = maildir
        self.reactor = reactor

    def receivedHeader(self, helo: tuple[bytes, bytes], origin: smtp.Address,
                       recipients: list[smtp.User]) -> bytes:
        return b"Received: from " + helo[0] + b" by " + HOSTNAME.encode() + b" (twisted peer)"

    def validateFrom(self, helo: tuple[bytes, bytes], origin: smtp.Address) -> smtp.Address:
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], DurableMessage]:
        return lambda: DurableMessage(self.maildir, self.reactor)


class NoDelayESMTP(smtp.ESMTP):
    """Stock ESMTP with TCP_NODELAY set on its socket."""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        super().connectionMade()  # type: ignore[no-untyped-call]


class DurableESMTPFactory(protocol.ServerFactory):
    def __init__(self, delivery: DurableDelivery, starttls: ssl.CertificateOptions | None) -> None:
        self.delivery = delivery
        self.starttls = starttls

    def buildProtocol(self, addr: IAddress | None) -> NoDelayESMTP:
        p = NoDelayESMTP(contextFactory=self.starttls)  # type: ignore[no-untyped-call]
        p.host = HOSTNAME.encode()
        p.delivery = self.delivery
        p.factory = self
        return p


def serve(args: PeerArgs, reactor: PosixReactorBase) -> None:
    """Listen until SIGTERM or SIGINT."""
    pem = args.cert.read_bytes() + args.key.read_bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()  # type: ignore[no-untyped-call]
    reactor.suggestThreadPoolSize(args.threads)
    maildir = DurableMaildir(args.maildir)
    delivery = DurableDelivery(maildir, reactor)
    plain = endpoints.TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
        reactor, args.plain_port, interface=args.host)
    implicit = endpoints.SSL4ServerEndpoint(  # type: ignore[no-untyped-call]
        reactor, args.tls_port, options, interface=args.host)

    def ready(_: object) -> None:
        print(READY, flush=True)

    def failed(reason: Failure) -> None:
        print(f"twisted peer cannot listen: {reason.getErrorMessage()}", flush=True)
        reactor.stop()

    listening = defer.gatherResults([
        plain.listen(DurableESMTPFactory(delivery, options)),  # type: ignore[no-untyped-call]
        implicit.listen(DurableESMTPFactory(delivery, None)),  # type: ignore[no-untyped-call]
    ], consumeErrors=True)
    listening.addCallbacks(ready, failed)

    def stop(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reactor.addSystemEventTrigger("after", "shutdown", maildir.close)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor as global_reactor

    reactor = cast(PosixReactorBase, global_reactor)
    serve(parse_peer_args(argv, __doc__ or ""), reactor)
    reactor.run()


if __name__ == "__main__":
    main()
