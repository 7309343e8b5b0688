"""The SMTP listeners: factories for plain and implicit-TLS ports, the
connection cap and graceful shutdown. Each connection is an ``SMTPConnection``
(protocol.py) around a sans-IO ``Session`` (session.py); it sees the listener only
through the narrow ``ConnectionHost`` interface, so protocol.py never imports this.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from elemta_smtp.metrics import Metrics
from elemta_smtp.net.tlslayer import ServerTLSFactory
from elemta_smtp.smtp import replies
from elemta_smtp.smtp.counting import SMTPCounts
from elemta_smtp.smtp.protocol import SMTPConnection
from elemta_smtp.smtp.settings import SessionSettings
from elemta_smtp.smtp.sink import MessageSink

__all__ = ["SMTPConnection", "SMTPServer"]

log = Logger(namespace="elemta.smtp")


class _SMTPFactory(Factory):
    noisy = False

    def __init__(self, server: SMTPServer, implicit_tls: bool) -> None:
        self._server = server
        self._implicit_tls = implicit_tls

    def buildProtocol(self, addr: IAddress | None) -> SMTPConnection:
        return SMTPConnection(self._server, self._implicit_tls)


class SMTPServer:
    """Everything the SMTP listeners share: settings, sink, TLS, clock, open connections.
    It is each connection's ``ConnectionHost`` (protocol.py)."""

    def __init__(self, settings: SessionSettings, sink: MessageSink,
                 tls: IOpenSSLServerConnectionCreator | None, clock: IReactorTime,
                 metrics: Metrics | None = None) -> None:
        if tls is None and settings.starttls_available:
            settings = replace(settings, starttls_available=False)
        self.settings = settings
        self.sink = sink
        self.tls = tls
        self.clock: Any = clock  # IReactorTime (untyped for mypy without the zope plugin)
        self.counts = SMTPCounts(metrics) if metrics is not None else None
        if metrics is not None:
            metrics.connections_open.set_function(lambda: len(self.connections))
        self.connections: set[SMTPConnection] = set()
        self._stopping = False
        self._drained: list[Deferred[None]] = []
        self._deadline: Any = None  # IDelayedCall

    def plain_factory(self) -> IProtocolFactory:
        """Plain SMTP; offers STARTTLS when the settings and a TLS creator allow it."""
        return cast(IProtocolFactory, _SMTPFactory(self, implicit_tls=False))

    def implicit_tls_factory(self) -> IProtocolFactory:
        """SMTP inside TLS from the first byte (RFC 8314); never offers STARTTLS."""
        if self.tls is None:
            raise ValueError("implicit TLS needs a TLS connection creator")
        wrapped = cast(IProtocolFactory, _SMTPFactory(self, implicit_tls=True))
        return cast(IProtocolFactory, ServerTLSFactory(self.tls, wrapped))

    @property
    def active_connections(self) -> int:
        return len(self.connections)

    def admit(self, connection: SMTPConnection) -> bytes | None:
        """Count a new connection in, or return the 421 it gets instead of a greeting."""
        if self._stopping or len(self.connections) >= self.settings.max_connections:
            if self.counts is not None:
                self.counts.connection_refused(shutting_down=self._stopping)
            return replies.SHUTTING_DOWN if self._stopping else replies.TOO_MANY_CONNECTIONS
        self.connections.add(connection)
        return None

    def connection_lost(self, connection: SMTPConnection) -> None:
        self.connections.discard(connection)
        if self._stopping and not self.connections:
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def shutdown(self, timeout: float) -> Deferred[None]:
        """Stop gracefully: idle sessions get 421 and are closed, a message in
        progress is finished and answered first; after ``timeout`` seconds the
        rest are dropped. Fires when no connection is left."""
        self._stopping = True
        if not self.connections:
            return succeed(None)
        log.info("shutting down: {count} SMTP connections open, waiting up to {timeout}s",
                 count=len(self.connections), timeout=timeout)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        if self._deadline is None:
            self._deadline = self.clock.callLater(timeout, self._drop_all)
        for connection in list(self.connections):
            connection.shutdown()
        return d

    def _drop_all(self) -> None:
        self._deadline = None
        if self.connections:
            log.warn("shutdown timeout: dropping {count} SMTP connections", count=len(self.connections))
        for connection in list(self.connections):
            connection.abort()
