"""What each SMTP command does, given the state it arrives in: the command half of
the sans-IO session.

``Dialogue`` holds what the client has said (HELO name, sender, recipients, the
message being received) and runs one command line at a time, appending the
``Action`` values it leads to. ``Session`` (session.py) builds on it with the
connection's life: reading bytes, DATA, time, TLS, delivery outcomes. Which command
may come when, and where it leads, is only in the tables of states.py; syntax is in
commands.py and recipient policy in policy.py.
"""

from __future__ import annotations

from collections.abc import Callable

from elemta_smtp.smtp import loglines, replies
from elemta_smtp.smtp.actions import Abort, AbortMessage, Action, BeginMessage, Close, Reply, StartTLS
from elemta_smtp.smtp.commands import (
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
from elemta_smtp.smtp.states import READING_STATES, Event, State, next_state, sequence_error

# Verbs that mean the peer is not an SMTP client (a browser, a proxy probe):
# answer once and hang up, like Postfix does.
_NON_SMTP = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"})
# Real SMTP commands elemta does not offer.
_NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "AUTH", "BDAT", "ATRN", "SEND", "SOML", "SAML"})


class Dialogue:
    """The commands of one SMTP session and what the client told it so far."""

    def __init__(self, settings: SessionSettings, peer: str, state: State,
                 now: Callable[[], float], make_id: Callable[[], str]) -> None:
        self.settings = settings
        self.peer = peer
        self.state = state
        self.tls_active = False      # a TLS handshake finished on this connection
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.close_reason = ""
        self._now = now
        self._make_id = make_id
        self._tls_wanted = False     # a handshake was expected (implicit TLS or STARTTLS)
        self._buf = b""              # input not read yet
        self._line_started: float | None = None  # when the unfinished command line began
        self._errors = 0
        self._helo = ""
        self._extended = False
        self._sender = ""
        self._recipients: list[str] = []
        self._framer: DataFramer | None = None
        self._message: BeginMessage | None = None  # the message being received
        self._shutdown_requested = False

    def _command(self, line: bytes, out: list[Action]) -> None:
        """Run one command line (without its line end)."""
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
            out.append(loglines.refused_at_mail(
                exc.sender, exc.size, f"message size {exc.size} exceeds max_message_size "
                                      f"{exc.limit}", self.peer))
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
        queue_id = self._make_id()
        recipients = tuple(self._recipients)
        header = received_header(
            helo=self._helo, peer=self.peer, hostname=settings.hostname,
            extended=self._extended, tls=self.tls_active, tls_version=self.tls_version,
            tls_cipher=self.tls_cipher, queue_id=queue_id, recipients=recipients,
            now=self._now())
        self._framer = DataFramer(settings.max_message_size, settings.bare_newline == "reject")
        self._message = BeginMessage(queue_id, self._sender, recipients, header)
        out.append(self._message)
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
        self._forget_client()
        self.state = next_state(self.state, Event.STARTTLS)
        self._tls_wanted = True
        out.append(Reply(replies.READY_FOR_TLS))
        out.append(StartTLS())

    # --- helpers ----------------------------------------------------------------------

    def _error(self, reply: bytes, out: list[Action]) -> None:
        out.append(Reply(reply))
        self._errors += 1
        if self._errors >= self.settings.max_errors and self.state in READING_STATES:
            out.append(Reply(replies.TOO_MANY_ERRORS))
            self._close(out, "too many errors")

    def _reset_transaction(self) -> None:
        self._sender = ""
        self._recipients = []
        self._framer = None
        self._message = None

    def _forget_client(self) -> None:
        self._reset_transaction()
        self._helo, self._extended = "", False

    def _drop_message(self, out: list[Action], reason: str) -> None:
        """The message being received is refused or cut off: drop it and log why."""
        out.append(AbortMessage(reason))
        if self._message is not None:
            out.append(loglines.message_refused(self._message, reason))

    def _abort_message(self, out: list[Action], reason: str) -> None:
        """The dialogue ends in the middle of DATA: drop the message (if not refused already)."""
        if self.state is State.DATA and self._framer is not None and self._framer.error is None:
            self._drop_message(out, reason)
        self._framer = None
        self._message = None

    def _after_message(self, out: list[Action]) -> None:
        if self._shutdown_requested:
            out.append(Reply(replies.SHUTTING_DOWN))
            self._close(out, "shutdown")

    def _close(self, out: list[Action], reason: str) -> None:
        """Say goodbye: the replies before go out, then the connection is closed."""
        self._end(out, Close(), reason)

    def _end(self, out: list[Action], how: Close | Abort, reason: str) -> None:
        out.append(how)
        self.state = next_state(self.state, Event.CLOSE)
        self.close_reason = reason
        self._buf = b""
        self._line_started = None


_Handler = Callable[[Dialogue, str, list[Action]], None]
_HANDLERS: dict[str, _Handler] = {
    "HELO": Dialogue._helo_command,
    "EHLO": Dialogue._ehlo,
    "MAIL": Dialogue._mail,
    "RCPT": Dialogue._rcpt,
    "DATA": Dialogue._data_command,
    "RSET": Dialogue._rset,
    "NOOP": Dialogue._noop,
    "QUIT": Dialogue._quit,
    "VRFY": Dialogue._vrfy,
    "HELP": Dialogue._help,
    "STARTTLS": Dialogue._starttls,
}
