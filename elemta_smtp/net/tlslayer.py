"""A lean server-side TLS layer on pyOpenSSL's memory BIO, in place of Twisted's
``TLSMemoryBIOProtocol`` for the SMTPS port (``ServerTLSFactory``) and for
STARTTLS (``start_tls``).

It does what the SMTP adapter needs and no more, with as few Python calls and
exceptions per packet as it can: one ``bio_write`` and a ``recv`` loop per read,
one ``sendall`` + ``bio_read`` + socket send per write (no write is put off to a
later reactor turn), no producer membranes (the application's producer is
registered with the TCP connection itself; this layer keeps no plaintext buffer
once the handshake is done), no Deferreds. Writes made before the handshake
completes (the implicit-TLS greeting) wait for it and go out with the server's
last handshake flight. ``loseConnection`` sends close_notify and closes without
waiting for the peer's; a TLS error ends TLS at once, sends OpenSSL's alert, closes
the connection and reaches the application as the ``connectionLost`` reason.

The connection creator is asked for an ``SSL.Connection`` per connection, as
Twisted asks it, so certificate reload and SNI work as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import MethodType
from typing import Any, cast

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides  # type: ignore[import-untyped, unused-ignore]

__all__ = ["ServerTLSFactory", "ServerTLSLayer", "start_tls", "write_and_close"]

log = Logger(namespace="elemta.tls")

#: Bytes asked of OpenSSL per ``recv``/``bio_read``. A shorter ``bio_read`` means the BIO is
#: empty (no second call, no WantReadError); ``recv`` returns one record at a time.
CHUNK = 65536


def _make_pending_output() -> Callable[[SSL.Connection], bool]:
    """``pending(tls)``: has OpenSSL written output into ``tls``'s outgoing memory BIO that
    was not sent yet? One C call (``BIO_get_mem_data`` on pyOpenSSL's outgoing BIO, ~0.1 us)
    where the bindings have it; else always yes, and ``_flush`` finds out (a ``bio_read``
    that raises WantReadError when the BIO is empty, ~1 us)."""
    get_mem_data = getattr(_lib, "BIO_get_mem_data", None)
    if get_mem_data is not None:
        holder = _ffi.new("char **")

        def pending(tls: SSL.Connection) -> bool:
            bio = getattr(tls, "_from_ssl", None)
            return bio is None or get_mem_data(bio, holder) > 0

        return pending

    def always(tls: SSL.Connection) -> bool:  # let _flush find out (WantReadError when empty)
        return True

    return always


_pending_output = _make_pending_output()


class ServerTLSLayer(Protocol):
    """TLS between a TCP transport (below) and an application protocol (above).

    For the application it is the transport (implicit TLS); under STARTTLS the TCP
    connection stays the application's transport and hands its writes, closes and
    producer calls to this layer, as Twisted's ``startTLS`` arranges."""

    transport: Any  # the TCP connection (ITCPTransport; untyped without the zope plugin)

    def __init__(self, creator: IOpenSSLServerConnectionCreator, wrapped: IProtocol,
                 started_tls: bool = False) -> None:
        self._creator = creator
        self.wrappedProtocol: Any = wrapped
        self._started_tls = started_tls  # STARTTLS: the TCP connection routes to this layer
        self._tls: Any = None  # SSL.Connection (pyOpenSSL's stubs are partial)
        self._tcp: Any = None  # the tcp.Connection for direct socket sends, if there is one
        self._lower_write: Any = None
        self._handshake_done = False
        self._early: list[bytes] = []  # application writes made before the handshake finished
        self._over = False  # no more TLS: error, close_notify, abort or connection lost
        self._reason: Failure | None = None  # what connectionLost reports instead of the TCP reason
        self.disconnecting = False

    # --- below: the TCP connection ----------------------------------------------------

    def makeConnection(self, transport: object) -> None:
        self.connected = True
        self.transport = transport
        creator: Any = self._creator
        tls: Any = creator.serverConnectionForTLS(self)
        tls.set_accept_state()
        self._tls = tls
        if isinstance(transport, tcp.Connection):
            self._tcp = transport
            self._lower_write = MethodType(FileDescriptor.write, transport)
        elif self._started_tls:
            raise TypeError("start_tls needs a Twisted TCP connection")
        else:
            self._lower_write = cast(Any, transport).write
        if not self._started_tls:
            self.wrappedProtocol.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        tls = self._tls
        if self._over:
            return
        tls.bio_write(data)
        if not self._handshake_done:
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                self._flush()
                return
            except SSL.Error:
                self._fail(Failure())  # type: ignore[no-untyped-call]
                return
            self._handshake_completed()
        wrapped = self.wrappedProtocol
        while self._reading():
            try:
                plain = tls.recv(CHUNK)
            except SSL.WantReadError:
                # A record that held no application data may have made OpenSSL queue
                # output of its own: the no_renegotiation alert for a TLS 1.2 renegotiation,
                # a TLS 1.3 KeyUpdate or ticket. It must go out now, not with the next reply
                # (the client is waiting for it and sends nothing more until then).
                if _pending_output(tls):
                    self._flush()
                return
            except SSL.ZeroReturnError:  # the client's close_notify
                self._over = True
                self._close_tls()
                return
            except SSL.Error:
                self._fail(Failure())  # type: ignore[no-untyped-call]
                return
            wrapped.dataReceived(plain)  # one record at a time: loop until OpenSSL wants more

    def _reading(self) -> bool:
        return not (self._over or self.disconnecting)

    def _handshake_completed(self) -> None:
        self._handshake_done = True
        early, self._early = self._early, []
        if early:
            self._encrypt(b"".join(early))  # sent with the handshake's last flight
        else:
            self._flush()
        if self._over:
            return
        if self.disconnecting:  # closed before the handshake, with writes that waited for it
            self._close_tls()
            return
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.connected:
            return
        self.connected = False
        self._over = True
        if self._reason is not None:
            reason = self._reason
        elif not self._handshake_done and reason.check(ConnectionDone):  # type: ignore[no-untyped-call]
            reason = Failure(ConnectionLost(  # type: ignore[no-untyped-call]
                "the client closed the connection during the TLS handshake"))
        self._reason = None
        self.wrappedProtocol.connectionLost(reason)

    # --- above: the application's transport --------------------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnecting or self._over or not data:
            return
        if not self._handshake_done:
            self._early.append(bytes(data))
            return
        self._encrypt(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Send close_notify and close; writes waiting for the handshake wait for it first."""
        if self.disconnecting or not self.connected:
            return
        self.disconnecting = True
        if self._over:
            self._lower_lose()
        elif self._handshake_done:
            self._close_tls()
        elif not self._early:
            self.abortConnection()

    def write_and_close(self, data: bytes) -> None:
        """``write(data)`` then ``loseConnection()``, with the data and close_notify in one
        send once the handshake is done (a last reply, then the close)."""
        if self.disconnecting or self._over or not self.connected or not self._handshake_done:
            self.write(data)
            self.loseConnection()
            return
        self.disconnecting = True
        if data and not self._seal(data):
            return
        self._close_tls()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._over = True
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self._lower_lose()

    def getHandle(self) -> SSL.Connection:
        """The pyOpenSSL connection (TLS version, cipher, peer certificate)."""
        handle: SSL.Connection = self._tls
        return handle

    def getPeerCertificate(self) -> object:
        cert: object = self._tls.get_peer_certificate()
        return cert

    def getPeer(self) -> IAddress:
        peer: IAddress = self.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self.transport.getHost()
        return host

    def registerProducer(self, producer: object, streaming: bool) -> None:
        """The producer goes to the TCP connection itself: once the handshake is done this
        layer holds no plaintext, so TCP's own write buffer is the one that fills."""
        if self._started_tls:
            FileDescriptor.registerProducer(self.transport, cast(Any, producer), streaming)
        else:
            self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._started_tls:
            FileDescriptor.unregisterProducer(self.transport)
        else:
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    # --- moving bytes ------------------------------------------------------------------

    def _seal(self, data: bytes) -> bool:
        """Encrypt ``data`` into the memory BIO; False (and the connection failed) on a TLS error."""
        try:
            self._tls.sendall(data)
        except SSL.Error:
            self._fail(Failure())  # type: ignore[no-untyped-call]
            return False
        return True

    def _encrypt(self, data: bytes) -> None:
        if self._seal(data):
            self._flush()

    def _flush(self) -> None:
        """Send what OpenSSL wrote to its memory BIO."""
        tls = self._tls
        try:
            out = tls.bio_read(CHUNK)
        except SSL.WantReadError:
            return
        if len(out) == CHUNK:
            parts = [out]
            while len(out) == CHUNK:
                try:
                    out = tls.bio_read(CHUNK)
                except SSL.WantReadError:
                    break
                parts.append(out)
            out = b"".join(parts)
        self._send(out)

    def _send(self, data: bytes) -> None:
        """To the socket at once when TCP has nothing queued (Twisted's ``write`` would
        queue it for the next epoll round); else through TCP's buffer."""
        conn = self._tcp
        if (conn is not None and conn.connected and not conn.disconnecting and not conn._aborting
                and not conn.dataBuffer and not conn._tempDataBuffer):
            try:
                sent = conn.socket.send(data)
            except OSError:  # would block, or an error TCP's own path will see and report
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self._lower_write(data)

    def _close_tls(self) -> None:
        """close_notify, then close TCP once it has sent what it holds."""
        with contextlib.suppress(SSL.Error):
            self._tls.shutdown()
        self._flush()
        self._lower_lose()

    def _lower_lose(self) -> None:
        if self._started_tls:
            FileDescriptor.loseConnection(self.transport)  # type: ignore[no-untyped-call]
        else:
            self.transport.loseConnection()

    def _fail(self, failure: Failure) -> None:
        """A TLS error: nothing more is read or written through TLS; OpenSSL's alert goes
        out and TCP closes (orderly: an RST could reach the client before the alert, and
        the alert says what was wrong). ``failure`` is what the application is told."""
        if self._handshake_done:  # a failed handshake is logged by the application
            log.info("TLS error from {peer}, connection closed: {error}",
                     peer=str(getattr(self.getPeer(), "host", "?")), error=failure.getErrorMessage())
        self._reason = failure
        self._over = True
        self.disconnecting = True
        self._flush()
        self._lower_lose()


class ServerTLSFactory(Factory):
    """Implicit TLS (SMTPS): every connection of ``wrapped`` inside a ``ServerTLSLayer``."""

    noisy = False

    def __init__(self, creator: IOpenSSLServerConnectionCreator, wrapped: IProtocolFactory) -> None:
        self._creator = creator
        self._wrapped = wrapped

    def buildProtocol(self, addr: IAddress | None) -> ServerTLSLayer | None:
        protocol = self._wrapped.buildProtocol(cast(IAddress, addr))
        if protocol is None:
            return None
        return ServerTLSLayer(self._creator, protocol)


def start_tls(transport: object, creator: IOpenSSLServerConnectionCreator) -> None:
    """STARTTLS as the server: put a ``ServerTLSLayer`` between a TCP connection and its
    protocol the way ``twisted.internet._newtls.startTLS`` does. Transports that are not
    Twisted TCP connections (test doubles) run their own ``startTLS``."""
    conn: Any = transport
    if not isinstance(transport, tcp.Connection) or conn.TLS:
        conn.startTLS(creator)
        return
    producer, streaming = conn.producer, conn.streamingProducer
    if producer is not None:
        conn.unregisterProducer()
    layer = ServerTLSLayer(creator, conn.protocol, started_tls=True)
    conn.protocol = layer
    conn.getHandle = layer.getHandle
    conn.getPeerCertificate = layer.getPeerCertificate
    directlyProvides(conn, ISSLTransport)
    conn.TLS = True
    layer.makeConnection(conn)
    if producer is not None:
        conn.registerProducer(producer, streaming)


def write_and_close(transport: object, data: bytes) -> None:
    """Write ``data`` (may be empty) to ``transport`` and close it. Through a
    ``ServerTLSLayer`` (implicit TLS, or a TCP connection after ``start_tls``) the data
    and close_notify leave in one send instead of two."""
    conn: Any = transport
    layer = conn if isinstance(conn, ServerTLSLayer) else None
    if layer is None and isinstance(conn, tcp.Connection) and conn.TLS and conn.connected:
        layer = conn.protocol if isinstance(conn.protocol, ServerTLSLayer) else None
    if layer is not None:
        layer.write_and_close(data)
        return
    if data:
        conn.write(data)
    conn.loseConnection()
