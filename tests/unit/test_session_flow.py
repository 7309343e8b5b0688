"""The session's own time and flow, decided without a clock or a socket: deadlines (told
the time), the TLS handshake states, pausing and resuming reading, and delivery outcomes
with their reply and log line."""

from __future__ import annotations

import pytest

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.actions import (
    Abort,
    AbortMessage,
    Action,
    Close,
    EndMessage,
    Log,
    PauseReading,
    Reply,
    ResumeReading,
    StartTLS,
)
from elemta_smtp.smtp.deadlines import Deadline, Expiry, due, next_deadline
from elemta_smtp.smtp.session import PAUSE_INPUT_BYTES, Session, SessionSettings
from elemta_smtp.smtp.sink import DeliveryFailed
from elemta_smtp.smtp.states import State

IDLE = 60.0
SETTINGS = SessionSettings(hostname="mx.example.com", idle_timeout=IDLE, starttls_available=True,
                           local_domains=frozenset({"example.com"}))
ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
MESSAGE = ENVELOPE + b"Subject: hi\r\n\r\nHello\r\n.\r\n"


class Time:
    """The session's clock, set by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session_at(time: Time, implicit_tls: bool = False) -> Session:
    session = Session(SETTINGS, "192.0.2.7", implicit_tls=implicit_tls, now=time,
                      make_id=lambda: "QID1")
    session.start()
    return session


def logs(actions: list[Action]) -> list[Log]:
    return [a for a in actions if isinstance(a, Log)]


def lines(actions: list[Action]) -> list[str]:
    """The log lines as they read in the log."""
    return [a.text.format(**a.fields) for a in logs(actions)]


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


# --- the deadline decision, on plain times ------------------------------------------------


@pytest.mark.parametrize(("state", "active_at", "line_started", "expected"), [
    (State.GREETED, 100.0, None, Deadline(160.0, Expiry.IDLE)),
    (State.INIT, 100.0, 100.0, Deadline(160.0, Expiry.IDLE)),
    (State.MAIL, 130.0, 100.0, Deadline(160.0, Expiry.SLOW_LINE)),
    (State.DATA, 130.0, None, Deadline(190.0, Expiry.IDLE)),
    (State.TLS_PENDING, 100.0, None, Deadline(160.0, Expiry.NO_HANDSHAKE)),
    (State.IMPLICIT_TLS_PENDING, 100.0, None, Deadline(160.0, Expiry.NO_HANDSHAKE)),
    (State.CLOSING, 100.0, None, Deadline(160.0, Expiry.NOT_READING)),
    (State.DELIVERING, 100.0, None, None),
    (State.CLOSED, 100.0, None, None),
], ids=["idle", "line-begun-in-the-last-packet", "slow-line", "idle-in-data", "starttls-handshake",
        "implicit-tls-handshake", "closing-client-not-reading", "delivering", "closed"])
def test_next_deadline(state: State, active_at: float, line_started: float | None,
                       expected: Deadline | None) -> None:
    """Each state's deadline is one idle_timeout after what it waits from; none while our
    own disk is working or once the connection is gone."""
    assert next_deadline(state, IDLE, active_at, line_started) == expected


def test_due_only_once_the_deadline_is_reached() -> None:
    """Before its time a deadline is not due; at and after it, its expiry is."""
    deadline = Deadline(160.0, Expiry.IDLE)
    assert due(deadline, 159.999) is None
    assert due(deadline, 160.0) is Expiry.IDLE
    assert due(deadline, 500.0) is Expiry.IDLE
    assert due(None, 500.0) is None


# --- the session told the time --------------------------------------------------------------


def test_idle_deadline_follows_input_and_expires_with_421() -> None:
    """Input moves the deadline later; a timer that fires early gets nothing to do; at the
    deadline the client gets 421 4.4.2, the close, and one log line."""
    time = Time(1000.0)
    session = session_at(time)
    assert session.deadline() == 1060.0
    time.now = 1030.0
    session.receive(b"NOOP\r\n")
    assert session.deadline() == 1090.0
    assert session.timer_fired(1060.0) == []
    actions = session.timer_fired(1090.0)
    assert without_logs(actions) == [Reply(replies.idle_timeout("mx.example.com")), Close()]
    assert lines(actions) == ["closing idle connection from 192.0.2.7"]
    assert session.state is State.CLOSING and session.close_reason == "idle timeout"


def test_command_line_deadline_counts_from_its_first_byte() -> None:
    """Slowloris: a command line trickling in expires idle_timeout after its first byte,
    however recent the last byte, and says so in the log."""
    time = Time(1000.0)
    session = session_at(time)
    time.now = 1010.0
    session.receive(b"NO")
    time.now = 1065.0
    session.receive(b"O")
    assert session.deadline() == 1070.0
    actions = session.timer_fired(1070.0)
    assert Reply(replies.idle_timeout("mx.example.com")) in actions
    assert lines(actions) == [
        "closing connection from 192.0.2.7: one command line took longer than the idle timeout"]


def test_a_finished_line_starts_a_new_line_deadline() -> None:
    """A packet that ends one line and begins another: the new line's clock starts then."""
    time = Time(1000.0)
    session = session_at(time)
    session.receive(b"NO")
    time.now = 1050.0
    assert session.receive(b"OP\r\nNO") == [Reply(replies.OK)]
    time.now = 1100.0
    session.receive(b"O")
    assert session.deadline() == 1110.0


def test_a_closed_connection_the_client_holds_is_dropped_one_idle_period_later() -> None:
    """After the goodbye the session waits one idle_timeout for the client to let go, then
    asks for the connection to be dropped (nothing more is said)."""
    time = Time(1000.0)
    session = session_at(time)
    time.now = 1005.0
    assert session.receive(b"QUIT\r\n") == [Reply(replies.BYE), Close()]
    assert session.deadline() == 1065.0
    assert session.receive(b"NOOP\r\n") == []  # ignored: it does not keep the connection
    assert session.deadline() == 1065.0
    assert session.timer_fired(1065.0) == [Abort()]
    assert session.deadline() == 1125.0  # asked again if the transport did not let go


def test_no_deadline_while_delivering_and_a_fresh_one_after() -> None:
    """Waiting for our own disk is not the client's idleness: no deadline while the message
    is stored; once it is answered the client gets a full idle period."""
    time = Time(1000.0)
    session = session_at(time)
    assert isinstance(session.receive(MESSAGE)[-1], EndMessage)
    assert session.deadline() is None
    assert session.timer_fired(5000.0) == []
    time.now = 5000.0
    session.delivery_done(None)
    assert session.deadline() == 5060.0


def test_connection_lost_leaves_no_deadline() -> None:
    """Once the connection is gone nothing is due."""
    session = session_at(Time())
    session.connection_lost()
    assert session.state is State.CLOSED
    assert session.deadline() is None


# --- TLS handshake states -----------------------------------------------------------------


def test_implicit_tls_waits_for_the_handshake() -> None:
    """On the implicit-TLS port nothing is read before the handshake; then EHLO is needed."""
    time = Time(1000.0)
    session = session_at(time, implicit_tls=True)
    assert session.state is State.IMPLICIT_TLS_PENDING
    assert session.receive(b"EHLO c.example\r\n") == []
    time.now = 1020.0
    assert session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256") == []
    assert (session.state, session.tls_active) == (State.INIT, True)
    assert session.deadline() == 1080.0
    [ehlo] = session.receive(b"EHLO c.example\r\n")
    assert isinstance(ehlo, Reply) and b"STARTTLS" not in ehlo.data


def test_implicit_tls_handshake_not_done_in_time_is_dropped() -> None:
    """An implicit-TLS handshake not finished within idle_timeout: the connection is dropped
    without a reply (it could only wait for the handshake), and the log says why."""
    session = session_at(Time(1000.0), implicit_tls=True)
    assert session.deadline() == 1060.0
    actions = session.timer_fired(1060.0)
    assert without_logs(actions) == [Abort()]
    assert lines(actions) == ["dropping 192.0.2.7: no TLS handshake within the idle timeout"]
    assert lines(session.connection_lost(lambda: "Connection was aborted locally")) == [
        "TLS handshake with 192.0.2.7 failed: Connection was aborted locally",
        "connection from 192.0.2.7 closed (idle timeout): tls=not completed messages=0"]


def test_starttls_handshake_not_done_in_time_is_dropped() -> None:
    """After 220 to STARTTLS the handshake must finish within idle_timeout of it."""
    time = Time(1000.0)
    session = session_at(time)
    time.now = 1010.0
    assert session.receive(b"EHLO c.example\r\nSTARTTLS\r\n")[-1] == StartTLS()
    assert session.state is State.TLS_PENDING
    assert session.deadline() == 1070.0
    assert without_logs(session.timer_fired(1070.0)) == [Abort()]
    assert lines(session.connection_lost(lambda: "gone"))[0] == "TLS handshake with 192.0.2.7 failed: gone"


def test_completed_handshake_is_not_reported_as_failed() -> None:
    """A connection whose handshake finished logs its TLS version, not a handshake failure."""
    session = session_at(Time(), implicit_tls=True)
    session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    session.receive(b"QUIT\r\n")
    assert lines(session.connection_lost(lambda: "done")) == [
        "connection from 192.0.2.7 closed (quit): tls=TLSv1.3 messages=0"]


# --- pausing and resuming reading ----------------------------------------------------------


def test_input_piling_up_while_delivering_pauses_reading_once_and_resumes_after() -> None:
    """More than PAUSE_INPUT_BYTES held during a delivery asks once to stop reading; the
    delivery's answer reads the held input and asks to read again."""
    session = session_at(Time())
    session.receive(MESSAGE)
    noops = b"NOOP\r\n" * (PAUSE_INPUT_BYTES // 6 + 1)
    assert session.receive(noops) == [PauseReading()]
    assert session.receive(b"NOOP\r\n") == []
    actions = session.delivery_done(None)
    assert actions[-1] == ResumeReading()
    assert without_logs(actions).count(Reply(replies.OK)) == PAUSE_INPUT_BYTES // 6 + 2
    assert session.pending_input == 0


def test_small_pipelined_input_never_pauses() -> None:
    """Input under the limit is just held: no pause, and so no resume."""
    session = session_at(Time())
    session.receive(MESSAGE)
    assert session.receive(b"NOOP\r\n" * 100) == []
    assert not [a for a in session.delivery_done(None) if isinstance(a, PauseReading | ResumeReading)]


def test_reading_stays_paused_while_the_next_held_message_is_stored() -> None:
    """If the held input holds another whole message and still too much after it, reading
    stays paused until that one is answered too."""
    session = session_at(Time())
    session.receive(MESSAGE)
    second = b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n"
    assert session.receive(second + b"NOOP\r\n" * (PAUSE_INPUT_BYTES // 6 + 1)) == [PauseReading()]
    first = session.delivery_done(None)
    assert isinstance(first[-1], EndMessage)
    assert session.delivery_done(None)[-1] == ResumeReading()


# --- delivery outcomes: the reply and the log line together --------------------------------


def delivered(failure: DeliveryFailed | None) -> list[Action]:
    session = session_at(Time())
    session.receive(MESSAGE)
    return session.delivery_done(failure)


@pytest.mark.parametrize(("failure", "reply", "level", "result"), [
    (None, replies.queued("QID1"), "info", "queued"),
    (DeliveryFailed("disk full", transient=True), replies.LOCAL_ERROR, "error",
     "deferred (451): disk full"),
    (DeliveryFailed("mailbox is a file", transient=False), replies.DELIVERY_FAILED, "error",
     "failed (554): mailbox is a file"),
], ids=["stored", "transient", "permanent"])
def test_delivery_outcome_carries_its_reply_and_log_fields(
        failure: DeliveryFailed | None, reply: bytes, level: str, result: str) -> None:
    """The outcome is answered 250 / 451 / 554 and logged once, with queue id, sender,
    recipient count, size and the result worded to match the reply."""
    actions = delivered(failure)
    [log] = logs(actions)
    assert (log.level, dict(log.fields)) == (level, {
        "queue_id": "QID1", "sender": "alice@example.net", "rcpts": 1, "size": 22,
        "result": result})
    assert lines(actions) == [f"message QID1 from=<alice@example.net> rcpts=1 size=22 {result}"]
    assert without_logs(actions) == [Reply(reply)]


def test_outcome_after_the_connection_is_gone_is_only_logged() -> None:
    """A message stored after the client left gets no reply (it will retry: no 250 was sent),
    and the log line says so."""
    session = session_at(Time())
    session.receive(MESSAGE)
    session.connection_lost()
    actions = session.delivery_done(None)
    assert lines(actions) == [
        "message QID1 from=<alice@example.net> rcpts=1 size=22 queued (connection already lost: "
        "not acknowledged, the client will retry)"]
    assert without_logs(actions) == []
    assert session.messages == 0


def test_only_one_outcome_per_message() -> None:
    """A second outcome for the same message says and logs nothing."""
    session = session_at(Time())
    session.receive(MESSAGE)
    session.delivery_done(None)
    assert session.delivery_done(DeliveryFailed("late")) == []


@pytest.mark.parametrize(("cut", "reason"), [
    ("timeout", "idle timeout"), ("lost", "connection lost"), ("too-big", "message too big"),
])
def test_a_message_dropped_while_received_is_logged_as_refused(cut: str, reason: str) -> None:
    """A message cut off by the idle timeout, a lost connection or a limit: the writer is
    dropped and one "refused" line names the message and why."""
    session = session_at(Time(1000.0))
    session.receive(ENVELOPE + b"Subject: hi\r\n\r\n")
    if cut == "timeout":
        actions = session.timer_fired(1060.0)
    elif cut == "lost":
        actions = session.connection_lost()
    else:
        actions = session.receive((b"x" * 900 + b"\r\n") * 30_000)
    assert AbortMessage(reason) in actions
    assert f"message QID1 from=<alice@example.net> rcpts=1 refused: {reason}" in lines(actions)


def test_connection_line_counts_messages_and_names_the_reason() -> None:
    """The one line per connection: peer, why it closed, TLS, messages answered 250."""
    session = session_at(Time())
    session.receive(MESSAGE)
    session.delivery_done(None)
    session.receive(b"QUIT\r\n")
    assert lines(session.connection_lost()) == [
        "connection from 192.0.2.7 closed (quit): tls=no messages=1"]
