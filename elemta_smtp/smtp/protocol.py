"""The thin Twisted adapter around the sans-IO ``Session``: one per connection.

``SMTPConnection`` feeds received bytes to the session and carries out the
actions it returns, in the order it returns them: writes replies (all the
replies of one batch in one write), starts TLS, streams message text to the sink
(streaming.py), pauses and resumes reading, logs, closes or drops the connection.
It decides nothing about SMTP, time or flow: the session does.

Time: the session says when it next needs to act (``Session.deadline``); the
adapter arms one timer for then and calls ``Session.timer_fired``. Input only
moves the deadline later, so the timer is not touched per packet (a timer-heap
update per read costs measurable CPU): when it fires early it is armed again for
the rest. The transport's own write-buffer backpressure (``IPushProducer``: the
client does not read our replies) is I/O and is handled here; it combines with the
session's ``PauseReading``.

The connection needs a few things from the listener that accepted it; they are
the ``ConnectionHost`` below (listener.py implements it), so this module does not
know the listener.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped, unused-ignore]

from elemta_smtp.net.tcp import set_tcp_nodelay, write_through
from elemta_smtp.net.tlslayer import start_tls, write_and_close
from elemta_smtp.smtp import loglines
from elemta_smtp.smtp.actions import (
    Abort,
    AbortMessage,
    Action,
    BeginMessage,
    Close,
    EndMessage,
    Log,
    MessageData,
    PauseReading,
    Reply,
    ResumeReading,
    StartTLS,
)
from elemta_smtp.smtp.counting import SMTPCounts
from elemta_smtp.smtp.session import Session
from elemta_smtp.smtp.settings import SessionSettings
from elemta_smtp.smtp.sink import DeliveryFailed, MessageSink
from elemta_smtp.smtp.streaming import MessageStream

log = Logger(namespace="elemta.smtp")
_EMIT = {"info": log.info, "warn": log.warn, "error": log.error}


class ConnectionHost(Protocol):
    """What a connection needs from the listener that accepted it."""

    @property
    def settings(self) -> SessionSettings: ...

    @property
    def sink(self) -> MessageSink: ...

    @property
    def tls(self) -> IOpenSSLServerConnectionCreator | None:
        """The TLS connection creator for STARTTLS (None: STARTTLS is not offered)."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def counts(self) -> SMTPCounts | None:
        """Where the metrics are counted (None: ``[metrics]`` is off, nothing is counted)."""

    def admit(self, connection: SMTPConnection) -> bytes | None:
        """Count ``connection`` in, or return the 421 it gets instead (cap, shutting down)."""

    def connection_lost(self, connection: SMTPConnection) -> None:
        """``connection``, admitted before, is gone."""


def _peer_host(address: IAddress) -> str:
    return str(getattr(address, "host", address))


@implementer(IHandshakeListener, IPushProducer)
class SMTPConnection(TwistedProtocol):
    """One SMTP connection: a ``Session`` wired to a transport and a sink."""

    transport: Any  # ITransport + IProducer + ITLSTransport (untyped: no zope mypy plugin)

    def __init__(self, host: ConnectionHost, implicit_tls: bool) -> None:
        self._host = host
        self._implicit_tls = implicit_tls
        self.session: Session | None = None
        self._peer = "?"
        self._clock = host.clock
        self._timer: IDelayedCall | None = None  # armed at the session's deadline
        self._running: list[Action] | None = None  # the actions being carried out
        self._paused: set[str] = set()  # why reading is paused: "input" (session), "writes"
        self._producing = False  # registered with the transport as its producer
        self._closing = False
        self._lost = False
        self._stream = MessageStream(host.sink, self._delivered)
        self._counts = host.counts
        self._stored_at = 0.0  # when the last EndMessage went to the sink (with counts only)

    # --- connection life ---------------------------------------------------------------

    def connectionMade(self) -> None:
        host = self._host
        self._peer = _peer_host(self.transport.getPeer())
        set_tcp_nodelay(self.transport)
        write_through(self.transport)
        refusal = host.admit(self)
        if refusal is not None:
            self._run([loglines.connection_refused(self._peer, refusal)])
            self._closing = True
            self.transport.write(refusal)
            self.transport.loseConnection()
            # On the implicit-TLS port the 421 waits for a handshake that may never
            # come: a refused connection gets one idle period, then it is dropped.
            self._timer = self._clock.callLater(host.settings.idle_timeout,
                                                self.transport.abortConnection)
            return
        self.session = Session(host.settings, self._peer, implicit_tls=self._implicit_tls,
                               now=self._clock.seconds)
        if self._counts is not None:
            self._counts.connection_accepted(self._implicit_tls)
        if not self._implicit_tls:
            self._register_producer()
        self._run(self.session.start())
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is not None:
            actions = session.receive(data)
            if actions:
                self._run(actions)

    def handshakeCompleted(self) -> None:
        if self.session is None:
            return
        version = cipher = None
        try:
            handle: Any = self.transport.getHandle()
            version = handle.get_protocol_version_name()
            cipher = handle.get_cipher_name()
        except Exception:  # noqa: S110 - a transport without an OpenSSL handle: no details
            pass
        if self._counts is not None:
            self._counts.handshake_done(version)
        self._register_producer()
        self._run(self.session.tls_started(version, cipher))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.session is not None:  # (a refused connection was never counted in)
            self._run(self.session.connection_lost(reason.getErrorMessage))
            self._host.connection_lost(self)

    def shutdown(self) -> None:
        """Close when idle; a connection inside a message first finishes it."""
        if self.session is not None and not self._lost:
            self._run(self.session.shutdown())

    def abort(self) -> None:
        """Drop the connection now (shutdown timeout): an unanswered message is
        not acknowledged, so the client keeps it and retries."""
        self._closing = True
        self.transport.abortConnection()

    # --- the one timer ------------------------------------------------------------------

    def _arm(self) -> None:
        """Arm the timer at the session's deadline, if it has one and none is armed."""
        if self._timer is not None or self._lost or self.session is None:
            return
        deadline = self.session.deadline()
        if deadline is not None:
            delay = deadline - self._clock.seconds()
            self._timer = self._clock.callLater(delay if delay > 0 else 0, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self.session is not None:
            self._run(self.session.timer_fired(self._clock.seconds()))
        self._arm()

    def _delivered(self, failure: DeliveryFailed | None) -> None:
        """The sink answered for the message: the session words the outcome."""
        if self._counts is not None:
            self._counts.delivery_time(self._clock.seconds() - self._stored_at)
        if self.session is not None:
            self._run(self.session.delivery_done(failure))
            self._arm()  # no deadline while the message was being stored

    # --- IPushProducer: the transport's write buffer is full -> stop reading -----------
    # Registered only outside TLS handshakes: reading must go on until the handshake is
    # done (the implicit-TLS greeting waits for it), or it would stall for good.

    def _register_producer(self) -> None:
        if not self._producing and not self._closing and not self._lost:
            self.transport.registerProducer(self, True)
            self._producing = True

    def _unregister_producer(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
            self._resume("writes")

    def pauseProducing(self) -> None:
        self._pause("writes")

    def resumeProducing(self) -> None:
        self._resume("writes")

    def stopProducing(self) -> None:
        pass

    def _pause(self, reason: str) -> None:
        if not self._paused and not self._closing:
            self.transport.pauseProducing()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        self._paused.discard(reason)
        if not self._paused and not self._closing and not self._lost:
            self.transport.resumeProducing()

    # --- carrying out the session's actions --------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        """Do what ``actions`` say, in order. Actions the session returns while these are
        carried out (a delivery that answered at once, a transport that reports the close
        at once) are done after them, so the order the session chose is kept."""
        if self._running is not None:
            self._running.extend(actions)
            return
        self._running = actions
        pending: list[bytes] = []  # replies in a row go out in one write
        counts = self._counts
        try:
            for action in actions:  # the list may grow meanwhile
                if type(action) is Reply:
                    pending.append(action.data)
                    continue
                if type(action) is Log:
                    _EMIT[action.level](action.text, **action.fields)
                    if counts is not None:
                        counts.logged(action, self._implicit_tls)
                    continue
                if type(action) is Close:  # the last replies go out with the close (one TLS send)
                    self._close(b"".join(pending))
                    pending = []
                    continue
                if pending:
                    self.transport.write(b"".join(pending))
                    pending = []
                if type(action) is MessageData:
                    self._stream.write(action.data)
                elif type(action) is BeginMessage:
                    self._stream.begin(action)
                elif type(action) is EndMessage:
                    if counts is not None:
                        self._stored_at = self._clock.seconds()
                    self._stream.end()
                elif type(action) is AbortMessage:
                    self._stream.abort()
                elif type(action) is PauseReading:
                    self._pause("input")
                elif type(action) is ResumeReading:
                    self._resume("input")
                elif type(action) is StartTLS:
                    self._unregister_producer()
                    tls = self._host.tls
                    assert tls is not None  # the session offers STARTTLS only with TLS
                    start_tls(self.transport, tls)
                elif type(action) is Abort:
                    self._closing = True
                    self.transport.abortConnection()
            if pending:
                self.transport.write(b"".join(pending))
        finally:
            self._running = None

    def _close(self, last: bytes) -> None:
        """Send ``last`` (replies, may be empty) and close. A client that does not let
        go is dropped at the session's next deadline."""
        if self._closing:
            if last:
                self.transport.write(last)
            return
        self._unregister_producer()
        self._paused.clear()
        self._closing = True
        write_and_close(self.transport, last)
