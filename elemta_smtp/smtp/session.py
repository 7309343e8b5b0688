"""The SMTP server session as a sans-IO state machine (h11 style).

Bytes from the client go into ``Session.receive``; out come ``Action`` values
(actions.py) for an adapter to carry out: write a reply, start TLS, stream a
message to the sink, close. The session never touches a socket, a clock or a
file; time and queue ids are injected. Which command may come when is decided
by the tables in states.py; command syntax by commands.py; recipient policy by
policy.py; message framing by dataframe.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from elemta_smtp.smtp import replies
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
from elemta_smtp.smtp.commands import (
    MAX_COMMAND_LINE,
    CommandRejected,
    SizeExceeded,
    parse_hello,
    parse_mail,
    parse_rcpt,
    require_no_argument,
    split_command,
)
from elemta_smtp.smtp.dataframe import DataFramer
from elemta_smtp.smtp.policy import accept_recipient
from elemta_smtp.smtp.received import received_header
from elemta_smtp.smtp.settings import SessionSettings
from elemta_smtp.smtp.states import COMMAND_STATES, Event, State, next_state, sequence_error

if TYPE_CHECKING:
    from elemta_smtp.smtp.sink import DeliveryFailed

__all__ = ["Action", "Session", "SessionSettings", "State", "new_queue_id"]

# Verbs that mean the peer is not an SMTP client (a browser, a proxy probe):
# answer once and hang up, like Postfix does.
_NON_SMTP = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"})
# Real SMTP commands elemta does not offer.
_NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "AUTH", "BDAT", "ATRN", "SEND", "SOML", "SAML"})


def new_queue_id() -> str:
    """A fresh, unguessable message id for the Received header, the log and the 250 reply."""
    return secrets.token_hex(8).upper()


class Session:
    """One client connection's SMTP dialogue."""

    def __init__(self, settings: SessionSettings, peer: str, tls_active: bool = False, *,
                 now: Callable[[], float] = time.time,
                 make_id: Callable[[], str] = new_queue_id) -> None:
        self.settings = settings
        self.peer = peer
        self.tls_active = tls_active
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.state = State.INIT
        self.close_reason = ""
        self.messages = 0            # messages answered 250 on this connection
        self._now = now
        self._make_id = make_id
        self._buf = b""
        self._skipping_line = False  # discarding the rest of an over-long command line
        self._errors = 0
        self._helo = ""
        self._extended = False
        self._sender = ""
        self._recipients: list[str] = []
        self._framer: DataFramer | None = None
        self._queue_id = ""
        self._shutdown_requested = False

    @property
    def partial_command(self) -> bool:
        """A command line has begun and not ended (or an over-long one is being skipped)."""
        return self.state in COMMAND_STATES and (bool(self._buf) or self._skipping_line)

    @property
    def pending_input(self) -> int:
        """Bytes received but not yet read (held while a message is being stored)."""
        return len(self._buf)

    # --- the adapter's entry points -------------------------------------------------

    def start(self) -> list[Action]:
        """The client connected: greet it."""
        return [Reply(replies.greeting(self.settings.hostname))]

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the client. While a delivery is pending they are kept and
        read once ``delivery_done`` is called; while TLS is starting, discarded."""
        out: list[Action] = []
        if self.state is State.TLS_PENDING or self.state is State.CLOSED:
            return out
        if (data[:1] == b"\x16" and not self._buf and self.state is State.INIT
                and not self.tls_active):  # a TLS ClientHello where SMTP was expected
            out.append(Reply(replies.TLS_ON_PLAIN_PORT))
            self._close(out, "TLS handshake on the plain port")
            return out
        self._buf += data
        self._process(out)
        return out

    def tls_started(self, version: str | None = None, cipher: str | None = None) -> list[Action]:
        """The TLS handshake finished. After STARTTLS everything is forgotten
        (RFC 3207 4.2): the client must say EHLO again."""
        if self.state is State.TLS_PENDING:
            self._forget_client()
            self.state = next_state(self.state, Event.TLS_DONE)
        self.tls_active = True
        self.tls_version, self.tls_cipher = version, cipher
        return []

    def delivery_done(self, failure: DeliveryFailed | None = None) -> list[Action]:
        """The sink stored the message (``None``) or failed; answer the client and
        go on with any pipelined input received meanwhile."""
        if self.state is not State.DELIVERING:
            return []
        if failure is None:
            reply = replies.queued(self._queue_id)
            self.messages += 1
        else:
            reply = replies.LOCAL_ERROR if failure.transient else replies.DELIVERY_FAILED
        out: list[Action] = [Reply(reply)]
        self.state = next_state(self.state, Event.DELIVERED)
        self._reset_transaction()
        self._after_message(out)
        self._process(out)
        return out

    def timeout(self) -> list[Action]:
        """The client was silent for ``idle_timeout``: say so and close."""
        if self.state is State.CLOSED or self.state is State.DELIVERING:
            return []
        out: list[Action] = []
        self._abort_message(out, "idle timeout")
        out.append(Reply(replies.idle_timeout(self.settings.hostname)))
        self._close(out, "idle timeout")
        return out

    def shutdown(self) -> list[Action]:
        """The server is stopping: close now if idle, else after the current message."""
        if self.state is State.CLOSED:
            return []
        if self.state is State.DATA or self.state is State.DELIVERING:
            self._shutdown_requested = True
            return []
        out: list[Action] = [Reply(replies.SHUTTING_DOWN)]
        self._close(out, "shutdown")
        return out

    def connection_lost(self) -> list[Action]:
        """The connection is gone: drop a half-received message."""
        out: list[Action] = []
        self._abort_message(out, "connection lost")
        if self.state is not State.CLOSED:
            self.close_reason = self.close_reason or "client closed"
            self.state = State.CLOSED
        return out

    # --- input processing -------------------------------------------------------------

    def _process(self, out: list[Action]) -> None:
        buf, pos = self._buf, 0
        while pos < len(buf):
            state = self.state
            if state is State.DATA:
                ended, rest = self._data(buf[pos:] if pos else buf, out)
                if not ended:
                    buf, pos = b"", 0
                    break
                buf, pos = rest, 0
                continue
            if state not in COMMAND_STATES:
                break
            newline = buf.find(b"\n", pos)
            if newline < 0:
                if len(buf) - pos > MAX_COMMAND_LINE:
                    if not self._skipping_line:
                        self._skipping_line = True
                        self._error(replies.LINE_TOO_LONG, out)
                    buf, pos = b"", 0
                break
            start, pos = pos, newline + 1
            if self._skipping_line:
                self._skipping_line = False
                continue
            if pos - start > MAX_COMMAND_LINE:
                self._error(replies.LINE_TOO_LONG, out)
                continue
            if newline > start and buf[newline - 1] == 13:  # CRLF
                self._command(buf[start:newline - 1], out)
            elif self.settings.bare_newline == "reject":
                self._error(replies.BARE_NEWLINE_COMMAND, out)
            else:
                self._command(buf[start:newline], out)
        self._buf = b"" if self.state is State.TLS_PENDING or self.state is State.CLOSED else buf[pos:]

    def _data(self, chunk: bytes, out: list[Action]) -> tuple[bool, bytes]:
        framer = self._framer
        assert framer is not None
        refused_before = framer.error is not None
        text, rest = framer.feed(chunk)
        if text:
            out.append(MessageData(text))
        if framer.error is not None and not refused_before:
            out.append(AbortMessage(framer.reason))
        if rest is None:
            return False, b""
        if framer.error is not None:
            out.append(Reply(framer.error))
            self.state = next_state(self.state, Event.REFUSED)
            self._reset_transaction()
            self._after_message(out)
        else:
            out.append(EndMessage(framer.size))
            self.state = next_state(self.state, Event.END_OF_DATA)
        return True, rest

    def _command(self, line: bytes, out: list[Action]) -> None:
        try:
            verb, argument = split_command(line)
            handler = _HANDLERS.get(verb)
            if handler is None:
                if verb in _NON_SMTP:
                    out.append(Reply(replies.NON_SMTP_COMMAND))
                    self._close(out, "non-SMTP command")
                    return
                raise CommandRejected(replies.NOT_IMPLEMENTED if verb in _NOT_IMPLEMENTED
                                      else replies.UNKNOWN_COMMAND)
            if verb != "STARTTLS":
                refusal = sequence_error(verb, self.state)
                if refusal is not None:
                    raise CommandRejected(refusal)
            handler(self, argument, out)
        except CommandRejected as exc:
            self._error(exc.reply, out)

    # --- commands (the sequence check in states.py has already passed) -----------------

    def _hello(self, argument: str, out: list[Action], extended: bool) -> None:
        name = parse_hello(argument, extended)
        self._reset_transaction()
        self._helo, self._extended = name, extended
        self.state = next_state(self.state, Event.HELLO)
        settings = self.settings
        if extended:
            starttls = settings.starttls_available and not self.tls_active
            out.append(Reply(replies.ehlo(settings.hostname, settings.max_message_size, starttls)))
        else:
            out.append(Reply(replies.helo(settings.hostname)))

    def _ehlo(self, argument: str, out: list[Action]) -> None:
        self._hello(argument, out, extended=True)

    def _helo_command(self, argument: str, out: list[Action]) -> None:
        self._hello(argument, out, extended=False)

    def _mail(self, argument: str, out: list[Action]) -> None:
        try:
            mail = parse_mail(argument, self._extended, self.settings.max_message_size)
        except SizeExceeded as exc:  # a refused message: one log line, like one refused at DATA
            out.append(RefusedAtMail(exc.sender, exc.size, f"message size {exc.size} exceeds "
                                                           f"max_message_size {exc.limit}"))
            raise
        self._sender = mail.sender
        self.state = next_state(self.state, Event.MAIL)
        out.append(Reply(replies.SENDER_OK))

    def _rcpt(self, argument: str, out: list[Action]) -> None:
        recipient = accept_recipient(parse_rcpt(argument), self.settings)
        if recipient not in self._recipients:
            if len(self._recipients) >= self.settings.max_recipients:
                out.append(Reply(replies.TOO_MANY_RECIPIENTS))
                return
            self._recipients.append(recipient)
        self.state = next_state(self.state, Event.RCPT)
        out.append(Reply(replies.RECIPIENT_OK))

    def _data_command(self, argument: str, out: list[Action]) -> None:
        require_no_argument(argument)
        settings = self.settings
        self._queue_id = self._make_id()
        recipients = tuple(self._recipients)
        header = received_header(
            helo=self._helo, peer=self.peer, hostname=settings.hostname,
            extended=self._extended, tls=self.tls_active, tls_version=self.tls_version,
            tls_cipher=self.tls_cipher, queue_id=self._queue_id, recipients=recipients,
            now=self._now())
        self._framer = DataFramer(settings.max_message_size, settings.bare_newline == "reject")
        out.append(BeginMessage(self._queue_id, self._sender, recipients, header))
        out.append(Reply(replies.START_MAIL_INPUT))
        self.state = next_state(self.state, Event.DATA)

    def _rset(self, argument: str, out: list[Action]) -> None:
        require_no_argument(argument)
        self._reset_transaction()
        self.state = next_state(self.state, Event.RESET)
        out.append(Reply(replies.RESET_OK))

    def _noop(self, argument: str, out: list[Action]) -> None:
        out.append(Reply(replies.OK))

    def _quit(self, argument: str, out: list[Action]) -> None:
        require_no_argument(argument)
        out.append(Reply(replies.BYE))
        self._close(out, "quit")

    def _vrfy(self, argument: str, out: list[Action]) -> None:
        if not argument:
            raise CommandRejected(replies.SYNTAX_VRFY)
        out.append(Reply(replies.CANNOT_VRFY))

    def _help(self, argument: str, out: list[Action]) -> None:
        out.append(Reply(replies.HELP))

    def _starttls(self, argument: str, out: list[Action]) -> None:
        require_no_argument(argument)
        if self.tls_active:
            raise CommandRejected(replies.TLS_ALREADY_ACTIVE)
        if not self.settings.starttls_available:
            raise CommandRejected(replies.TLS_NOT_AVAILABLE)
        refusal = sequence_error("STARTTLS", self.state)
        if refusal is not None:
            raise CommandRejected(refusal)
        self._forget_client()
        self.state = next_state(self.state, Event.STARTTLS)
        out.append(Reply(replies.READY_FOR_TLS))
        out.append(StartTLS())

    # --- helpers ----------------------------------------------------------------------

    def _error(self, reply: bytes, out: list[Action]) -> None:
        out.append(Reply(reply))
        self._errors += 1
        if self._errors >= self.settings.max_errors and self.state is not State.CLOSED:
            out.append(Reply(replies.TOO_MANY_ERRORS))
            self._close(out, "too many errors")

    def _reset_transaction(self) -> None:
        self._sender = ""
        self._recipients = []
        self._framer = None

    def _forget_client(self) -> None:
        self._reset_transaction()
        self._helo, self._extended = "", False

    def _abort_message(self, out: list[Action], reason: str) -> None:
        if self.state is State.DATA and self._framer is not None and self._framer.error is None:
            out.append(AbortMessage(reason))
        self._framer = None

    def _after_message(self, out: list[Action]) -> None:
        if self._shutdown_requested:
            out.append(Reply(replies.SHUTTING_DOWN))
            self._close(out, "shutdown")

    def _close(self, out: list[Action], reason: str) -> None:
        out.append(Close())
        self.state = State.CLOSED
        self.close_reason = reason
        self._buf = b""


_Handler = Callable[[Session, str, list[Action]], None]
_HANDLERS: dict[str, _Handler] = {
    "HELO": Session._helo_command,
    "EHLO": Session._ehlo,
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data_command,
    "RSET": Session._rset,
    "NOOP": Session._noop,
    "QUIT": Session._quit,
    "VRFY": Session._vrfy,
    "HELP": Session._help,
    "STARTTLS": Session._starttls,
}
