"""The SMTP server session as a sans-IO state machine (h11 style).

Bytes from the client go into ``Session.receive``; out come ``Action`` values
(actions.py) for an adapter to carry out: write a reply, start TLS, stream a
message to the sink, pause or resume reading, log a line, close or drop the
connection. The session never touches a socket, a timer or a file. It reads the
injected ``now`` when something happens, says when it next needs to act
(``deadline``: idle client, slow command line, unfinished TLS handshake, a closed
connection the client holds on to; decided in deadlines.py) and acts when told
the time (``timer_fired``). It words the reply and the log line of every delivery
outcome (loglines.py), and decides when reading must pause.

What each command does is in dialogue.py, which this class builds on; every state
change goes through the tables of states.py; message framing is dataframe.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from elemta_smtp.smtp import loglines, replies
from elemta_smtp.smtp.actions import (
    Abort,
    Action,
    EndMessage,
    MessageData,
    PauseReading,
    Reply,
    ResumeReading,
)
from elemta_smtp.smtp.commands import MAX_COMMAND_LINE
from elemta_smtp.smtp.deadlines import Expiry, due, next_deadline
from elemta_smtp.smtp.dialogue import Dialogue
from elemta_smtp.smtp.settings import SessionSettings
from elemta_smtp.smtp.states import (
    COMMAND_STATES,
    HANDSHAKE_STATES,
    READING_STATES,
    Event,
    State,
    first_state,
    next_state,
)

if TYPE_CHECKING:
    from elemta_smtp.errors import DeliveryFailed
    from elemta_smtp.smtp.actions import BeginMessage

__all__ = ["PAUSE_INPUT_BYTES", "Action", "Session", "SessionSettings", "State", "new_queue_id"]

#: While a message is being stored, the session holds what the client pipelines
#: meanwhile; past this many bytes it asks the adapter to stop reading until the
#: reply is sent (it then holds at most this plus one read). No pause per message.
PAUSE_INPUT_BYTES = 64 * 1024


def new_queue_id() -> str:
    """A fresh, unguessable message id for the Received header, the log and the 250 reply."""
    return secrets.token_hex(8).upper()


class Session(Dialogue):
    """One client connection's SMTP dialogue. ``implicit_tls``: the connection is on
    the implicit-TLS port; commands are read once ``tls_started`` says the handshake
    is done."""

    def __init__(self, settings: SessionSettings, peer: str, *, implicit_tls: bool = False,
                 now: Callable[[], float] = time.time,
                 make_id: Callable[[], str] = new_queue_id) -> None:
        super().__init__(settings, peer, first_state(implicit_tls), now, make_id)
        self.messages = 0            # messages answered 250 on this connection
        self._tls_wanted = implicit_tls
        self._active_at = now()      # see deadlines.next_deadline
        self._input_paused = False   # PauseReading sent, ResumeReading not yet
        self._skipping_line = False  # discarding the rest of an over-long command line
        self._delivering: tuple[BeginMessage, int] | None = None  # handed over, not answered

    @property
    def pending_input(self) -> int:
        """Bytes received but not yet read (held while a message is being stored)."""
        return len(self._buf)

    # --- the adapter's entry points -------------------------------------------------

    def start(self) -> list[Action]:
        """The client connected: greet it (on the implicit-TLS port the TLS layer holds
        the greeting until the handshake is done)."""
        return [Reply(replies.greeting(self.settings.hostname))]

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the client. While a delivery is pending they are kept and
        read once ``delivery_done`` is called; while TLS is starting, discarded."""
        out: list[Action] = []
        state = self.state
        if state not in READING_STATES:
            return out
        now = self._active_at = self._now()
        if (data[:1] == b"\x16" and not self._buf and state is State.INIT
                and not self.tls_active):  # a TLS ClientHello where SMTP was expected
            out.append(Reply(replies.TLS_ON_PLAIN_PORT))
            self._close(out, "TLS handshake on the plain port")
            return out
        self._buf += data
        self._process(out)
        if self._buf or self._skipping_line:
            self._holding(data, now, out)
        else:
            self._line_started = None
        return out

    def tls_started(self, version: str | None = None, cipher: str | None = None) -> list[Action]:
        """The TLS handshake finished: commands are read from now on (after STARTTLS
        everything was forgotten, RFC 3207 4.2: the client must say EHLO again)."""
        if self.state in HANDSHAKE_STATES:
            self.state = next_state(self.state, Event.TLS_DONE)
            self._active_at = self._now()
        self.tls_active = True
        self.tls_version, self.tls_cipher = version, cipher
        return []

    def delivery_done(self, failure: DeliveryFailed | None = None) -> list[Action]:
        """The sink stored the message (``None``) or failed: log it, answer the client
        and go on with any pipelined input received meanwhile. If the connection is
        already gone only the log line is left (without its 250 the client retries)."""
        delivering, self._delivering = self._delivering, None
        if delivering is None:
            return []
        message, size = delivering
        reply, result = loglines.delivery_outcome(message.queue_id, failure)
        answered = self.state is State.DELIVERING
        out: list[Action] = [loglines.message_delivered(message, size, result, failure is None,
                                                        acknowledged=answered)]
        if not answered:
            return out
        out.append(Reply(reply))
        if failure is None:
            self.messages += 1
        self.state = next_state(self.state, Event.DELIVERED)
        self._active_at = self._now()
        self._reset_transaction()
        self._after_message(out)
        self._process(out)
        if self._input_paused and (self.state is not State.DELIVERING
                                   or len(self._buf) <= PAUSE_INPUT_BYTES):
            self._input_paused = False
            out.append(ResumeReading())
        return out

    def deadline(self) -> float | None:
        """When the session next needs ``timer_fired`` (None: not before something happens)."""
        deadline = next_deadline(self.state, self.settings.idle_timeout, self._active_at,
                                 self._line_started)
        return None if deadline is None else deadline.at

    def timer_fired(self, now: float) -> list[Action]:
        """The adapter's timer went off at ``now``: act on what is due (nothing if the
        client sent something meanwhile; ``deadline`` then says when to look again)."""
        expiry = due(next_deadline(self.state, self.settings.idle_timeout, self._active_at,
                                   self._line_started), now)
        out: list[Action] = []
        if expiry is None:
            return out
        self._active_at = now  # the next deadline is measured from here
        if expiry is Expiry.NOT_READING:
            out.append(Abort())
            return out
        if expiry is Expiry.NO_HANDSHAKE:  # a reply could only wait for the handshake: drop
            out.append(loglines.dropping_no_handshake(self.peer))
            self._end(out, Abort(), "idle timeout")
        else:
            out.append(loglines.closing_slow_line(self.peer) if expiry is Expiry.SLOW_LINE
                       else loglines.closing_idle(self.peer))
            self._abort_message(out, "idle timeout")
            out.append(Reply(replies.idle_timeout(self.settings.hostname)))
            self._close(out, "idle timeout")
        return out

    def shutdown(self) -> list[Action]:
        """The server is stopping: close now if idle, else after the current message."""
        if self.state is State.CLOSING or self.state is State.CLOSED:
            return []
        if self.state is State.DATA or self.state is State.DELIVERING:
            self._shutdown_requested = True
            return []
        out: list[Action] = [Reply(replies.SHUTTING_DOWN)]
        self._close(out, "shutdown")
        self._active_at = self._now()
        return out

    def connection_lost(self, reason: Callable[[], str] = lambda: "") -> list[Action]:
        """The connection is gone: drop a half-received message and log how the connection
        ended. ``reason()`` gives the transport's words for it, asked only if the log needs
        them (a failed TLS handshake)."""
        out: list[Action] = []
        if self.state is State.CLOSED:
            return out
        self._abort_message(out, "connection lost")
        if self._tls_wanted and not self.tls_active:
            out.append(loglines.handshake_failed(self.peer, reason()))
        self.close_reason = self.close_reason or "client closed"
        self.state = next_state(self.state, Event.LOST)
        tls = self.tls_version or ("yes" if self.tls_active
                                   else "not completed" if self._tls_wanted else "no")
        out.append(loglines.connection_closed(self.peer, self.close_reason, tls, self.messages))
        return out

    # --- input processing -------------------------------------------------------------

    def _holding(self, data: bytes, now: float, out: list[Action]) -> None:
        """Input is left over after ``data``: an unfinished command line, which must be
        complete within idle_timeout of its first byte, or input pipelined while a
        message is stored, which past PAUSE_INPUT_BYTES stops reading."""
        if self.state in COMMAND_STATES:
            if self._line_started is None or b"\n" in data:  # this packet began the line
                self._line_started = now
            return
        self._line_started = None
        if (self.state is State.DELIVERING and not self._input_paused
                and len(self._buf) > PAUSE_INPUT_BYTES):
            self._input_paused = True
            out.append(PauseReading())

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
        self._buf = buf[pos:] if self.state in READING_STATES else b""

    def _data(self, chunk: bytes, out: list[Action]) -> tuple[bool, bytes]:
        framer = self._framer
        assert framer is not None
        refused_before = framer.error is not None
        text, rest = framer.feed(chunk)
        if text:
            out.append(MessageData(text))
        if framer.error is not None and not refused_before:
            self._drop_message(out, framer.reason)
        if rest is None:
            return False, b""
        if framer.error is not None:
            out.append(Reply(framer.error))
            self.state = next_state(self.state, Event.REFUSED)
            self._reset_transaction()
            self._after_message(out)
        else:
            assert self._message is not None
            self._delivering, self._message = (self._message, framer.size), None
            out.append(EndMessage(framer.size))
            self.state = next_state(self.state, Event.END_OF_DATA)
        return True, rest
