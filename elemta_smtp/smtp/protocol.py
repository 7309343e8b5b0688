"""The thin Twisted adapter around the sans-IO ``Session``: one per connection.

``SMTPConnection`` feeds received bytes to the session and carries out the
actions it returns: writes replies, starts TLS, streams message text to the
sink's writer chunk by chunk. While a message is being made durable the
session keeps whatever the client pipelines meanwhile; reading stops only when
that exceeds ``PAUSE_INPUT_BYTES`` (no epoll change per message). The
listeners and the connection cap are in listener.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import fail
from twisted.internet.interfaces import IAddress, IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped, unused-ignore]

from elemta_smtp.net.tcp import set_tcp_nodelay, write_through
from elemta_smtp.net.tlslayer import start_tls, write_and_close
from elemta_smtp.smtp.actions import (
    AbortMessage,
    Action,
    BeginMessage,
    Close,
    EndMessage,
    MessageData,
    RefusedAtMail,
    Reply,
    StartTLS,
)
from elemta_smtp.smtp.session import Session
from elemta_smtp.smtp.sink import DeliveryFailed, MessageWriter
from elemta_smtp.smtp.states import State

if TYPE_CHECKING:
    from elemta_smtp.smtp.listener import SMTPServer

log = Logger(namespace="elemta.smtp")

#: While a message is being stored, input beyond this many bytes stops reading
#: until the reply is sent (the session holds at most this plus one read).
PAUSE_INPUT_BYTES = 64 * 1024


def _peer_host(address: IAddress) -> str:
    return str(getattr(address, "host", address))


@implementer(IHandshakeListener, IPushProducer)
class SMTPConnection(Protocol):
    """One SMTP connection: a ``Session`` wired to a transport and a sink."""

    transport: Any  # ITransport + IProducer + ITLSTransport (untyped: no zope mypy plugin)

    def __init__(self, server: SMTPServer, implicit_tls: bool) -> None:
        self._server = server
        self._implicit_tls = implicit_tls
        self.session: Session | None = None
        self._peer = "?"
        self._timer: Any = None  # IDelayedCall
        self._last_input = 0.0  # when the client last sent something (the idle timer checks it)
        self._line_started: float | None = None  # when the unfinished command line began
        self._paused: set[str] = set()
        self._producing = False  # registered with the transport as its producer
        self._closing = False
        self._lost = False
        self._writer: MessageWriter | None = None
        self._failure: DeliveryFailed | None = None
        self._message: BeginMessage | None = None

    # --- connection life ---------------------------------------------------------------

    def connectionMade(self) -> None:
        server = self._server
        self._peer = _peer_host(self.transport.getPeer())
        set_tcp_nodelay(self.transport)
        write_through(self.transport)
        refusal = server.refusal()
        if refusal is not None:
            log.warn("refused connection from {peer}: {reason}", peer=self._peer,
                     reason=refusal.decode().strip())
            self._closing = True
            self.transport.write(refusal)
            self.transport.loseConnection()
            # On the implicit-TLS port the 421 waits for a handshake that may never
            # come: a refused connection gets one idle period, then it is dropped.
            self._timer = server.clock.callLater(server.settings.idle_timeout,
                                                 self.transport.abortConnection)
            return
        server.connections.add(self)
        settings = server.settings
        self.session = Session(settings, self._peer, tls_active=self._implicit_tls,
                               now=server.clock.seconds)
        if not self._implicit_tls:
            self._register_producer()
        self._last_input = server.clock.seconds()
        self._timer = server.clock.callLater(settings.idle_timeout, self._idle)
        self._run(self.session.start())

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        if not self._closing:
            self._last_input = self._server.clock.seconds()
        actions = session.receive(data)
        if actions:
            self._run(actions)
        if session.partial_command:  # a command line must arrive whole within idle_timeout
            if self._line_started is None or b"\n" in data:  # this packet began the line
                self._line_started = self._last_input
        else:
            self._line_started = None
        if session.state is State.DELIVERING and session.pending_input > PAUSE_INPUT_BYTES:
            self._pause("input")

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
        self._register_producer()
        self._run(self.session.tls_started(version, cipher))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        session = self.session
        if session is None:
            return
        tls_pending = session.state is State.TLS_PENDING
        for action in session.connection_lost():
            if isinstance(action, AbortMessage):
                self._abort(action.reason)
        if tls_pending or (self._implicit_tls and session.tls_version is None):
            log.info("TLS handshake with {peer} failed: {reason}", peer=self._peer,
                     reason=reason.getErrorMessage())
        log.info("connection from {peer} closed ({close_reason}): tls={tls} messages={messages}",
                 peer=self._peer, close_reason=session.close_reason,
                 tls=session.tls_version or ("not completed" if session.tls_active else "no"),
                 messages=session.messages)
        self._server.connection_lost(self)

    def shutdown(self) -> None:
        """Close when idle; a connection inside a message first finishes it."""
        if self.session is not None and not self._lost:
            self._run(self.session.shutdown())

    def abort(self) -> None:
        """Drop the connection now (shutdown timeout): an unanswered message is
        not acknowledged, so the client keeps it and retries."""
        self._closing = True
        self.transport.abortConnection()

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
        pending: list[bytes] = []
        for action in actions:
            if type(action) is Reply:
                pending.append(action.data)
                continue
            if isinstance(action, Close):  # the last replies go out with the close (one TLS send)
                self._close(b"".join(pending))
                pending = []
                continue
            if pending:
                self.transport.write(b"".join(pending))
                pending = []
            if type(action) is MessageData:
                self._write(action.data)
            elif isinstance(action, BeginMessage):
                self._begin(action)
            elif isinstance(action, EndMessage):
                self._end(action)
            elif isinstance(action, AbortMessage):
                self._abort(action.reason)
            elif isinstance(action, StartTLS):
                self._unregister_producer()
                assert self._server.tls is not None  # the session offers STARTTLS only with TLS
                start_tls(self.transport, self._server.tls)
            elif isinstance(action, RefusedAtMail):
                log.info("message - from=<{sender}> rcpts=0 size={size} refused: {reason} "
                         "(MAIL from {peer})", queue_id="-", sender=action.sender,
                         rcpts=0, size=action.size, reason=action.reason, peer=self._peer)
        if pending:
            self.transport.write(b"".join(pending))

    def _close(self, last: bytes) -> None:
        """Send ``last`` (replies, may be empty) and close."""
        if self._closing:
            if last:
                self.transport.write(last)
            return
        self._unregister_producer()
        self._paused.clear()
        self._closing = True
        write_and_close(self.transport, last)
        # A client that stops reading could hold the connection open forever:
        # if it is still there after another idle period, abort it.
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._server.settings.idle_timeout)

    def _idle(self) -> None:
        """The idle timer fired. It is not pushed back on every read (that costs a
        timer-heap update per packet): it fires, sees recent input and re-arms itself
        for the rest of the idle period."""
        self._timer = None
        clock, settings = self._server.clock, self._server.settings
        if self._closing:
            self.transport.abortConnection()
            return
        deadline = self._last_input + settings.idle_timeout
        if self._line_started is not None:  # slowloris: bytes trickle, the line never ends
            deadline = min(deadline, self._line_started + settings.idle_timeout)
        left = deadline - clock.seconds()
        if left > 0:
            self._timer = clock.callLater(left, self._idle)
            return
        session = self.session
        if session is not None and session.state is State.DELIVERING:
            self._timer = clock.callLater(settings.idle_timeout, self._idle)
            return
        if session is not None and (session.state is State.TLS_PENDING
                                    or (self._implicit_tls and session.tls_version is None)):
            log.info("dropping {peer}: no TLS handshake within the idle timeout", peer=self._peer)
            self._closing = True  # a reply could only wait for the handshake: drop it now
            self.transport.abortConnection()
            return
        if self._line_started is not None and self._last_input > self._line_started:
            log.info("closing connection from {peer}: one command line took longer than the "
                     "idle timeout", peer=self._peer)
        else:
            log.info("closing idle connection from {peer}", peer=self._peer)
        self._timer = clock.callLater(settings.idle_timeout, self._idle)
        if session is not None:
            self._run(session.timeout())

    # --- streaming a message to the sink -----------------------------------------------

    def _begin(self, message: BeginMessage) -> None:
        self._message, self._failure, self._writer = message, None, None
        try:
            self._writer = self._server.sink.begin(message.recipients)
            self._writer.write(message.received_header)
        except Exception as exc:  # any sink error becomes a 451, never a crash
            self._sink_failed(exc)

    def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            writer.write(data)
        except Exception as exc:
            self._sink_failed(exc)

    def _sink_failed(self, exc: BaseException) -> None:
        if isinstance(exc, DeliveryFailed):
            self._failure = exc
        else:
            log.failure("message sink raised an unexpected error")  # called inside `except`
            self._failure = DeliveryFailed(f"unexpected error: {exc!r}", transient=True)
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _end(self, end: EndMessage) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            self._delivered(None, end.size, self._failure or DeliveryFailed("no message writer"))
            return
        try:
            result = writer.commit()
        except Exception as exc:
            result = fail(exc)
        result.addCallbacks(self._delivered, self._commit_failed,
                            callbackArgs=(end.size, None), errbackArgs=(end.size,))
        result.addErrback(lambda f: log.failure("error after delivery", f))

    def _commit_failed(self, failure: Failure, size: int) -> None:
        exc = failure.value
        if not isinstance(exc, DeliveryFailed):
            log.failure("message sink commit failed unexpectedly", failure)
            exc = DeliveryFailed(f"unexpected error: {exc!r}", transient=True)
        self._delivered(None, size, exc)

    def _delivered(self, _: object, size: int, failure: DeliveryFailed | None) -> None:
        message, session = self._message, self.session
        self._message = None
        if message is not None:
            if failure is None:
                result = "queued"
            else:
                result = ("deferred (451)" if failure.transient else "failed (554)") + f": {failure.reason}"
            if self._lost:
                result += " (connection already lost: not acknowledged, the client will retry)"
            emit = log.info if failure is None else log.error
            emit("message {queue_id} from=<{sender}> rcpts={rcpts} size={size} {result}",
                 queue_id=message.queue_id, sender=message.sender,
                 rcpts=len(message.recipients), size=size, result=result)
        if session is not None and not self._lost:
            self._run(session.delivery_done(failure))
            if "input" in self._paused and (session.state is not State.DELIVERING
                                            or session.pending_input <= PAUSE_INPUT_BYTES):
                self._resume("input")

    def _abort(self, reason: str) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
        message, self._message = self._message, None
        if message is not None:
            log.info("message {queue_id} from=<{sender}> rcpts={rcpts} refused: {reason}",
                     queue_id=message.queue_id, sender=message.sender,
                     rcpts=len(message.recipients), reason=reason)
