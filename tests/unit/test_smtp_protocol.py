"""The Twisted adapter (protocol.py) carrying out the session's actions: replies, the
sink, the one timer, backpressure, logs; on StringTransport and task.Clock. The
listener's own tests are in test_smtp_listener.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from zope.interface import directlyProvides

from elemta_smtp.net.tcp import set_tcp_nodelay
from elemta_smtp.smtp import replies
from elemta_smtp.smtp.session import PAUSE_INPUT_BYTES
from elemta_smtp.smtp.sink import DeliveryFailed
from tests.fakes import BODY, ENVELOPE, PEER, SETTINGS, Harness, fake_transport, take


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_greeting_on_connect(harness: Harness) -> None:
    """A new connection is greeted with 220 at once and counted."""
    _, transport = harness.connect()
    assert take(transport) == replies.greeting("mx.example.com")
    assert harness.server.active_connections == 1


def test_message_streamed_to_sink_and_acknowledged(harness: Harness) -> None:
    """The Received header then the body go to the writer; 250 queued follows the commit."""
    protocol, transport = harness.connect()
    take(transport)
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    [writer] = harness.sink.writers
    assert writer.recipients == ("bob@example.com",)
    assert writer.chunks[0].startswith(b"Received: from c.example ([192.0.2.7])\r\n")
    assert b"".join(writer.chunks[1:]) == BODY
    out = take(transport)
    after_354 = out.split(replies.START_MAIL_INPUT)[1]
    assert after_354.startswith(b"250 2.0.0 OK: queued as ")
    assert out.count(b"queued as") == 1


def test_pipelined_input_held_while_delivering_without_pausing() -> None:
    """While the sink commits, pipelined commands wait in the session (reading goes on:
    no pause per message) and are answered after the 250."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\nNOOP\r\n")
    assert transport.producerState == "producing"
    out = take(transport)
    assert b"queued" not in out and not out.endswith(replies.OK)
    writer = harness.sink.writers[0]
    assert writer.committed is not None
    writer.committed.callback(None)
    assert take(transport).endswith(b"\r\n" + replies.OK)


def test_reading_paused_when_input_piles_up_while_delivering() -> None:
    """More than PAUSE_INPUT_BYTES received during a delivery stops reading; the
    reply resumes it and the held input is then read."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    assert transport.producerState == "producing"
    protocol.dataReceived(b"NOOP\r\n" * (PAUSE_INPUT_BYTES // 6 + 1))
    assert transport.producerState == "paused"
    take(transport)
    writer = harness.sink.writers[0]
    assert writer.committed is not None
    writer.committed.callback(None)
    assert transport.producerState == "producing"
    out = take(transport)
    assert out.count(replies.OK) == PAUSE_INPUT_BYTES // 6 + 1
    assert protocol.session is not None and protocol.session.pending_input == 0


@pytest.mark.parametrize(("error", "expected"), [
    (DeliveryFailed("disk full", transient=True), replies.LOCAL_ERROR),
    (DeliveryFailed("bad mailbox", transient=False), replies.DELIVERY_FAILED),
    (RuntimeError("bug in sink"), replies.LOCAL_ERROR),
], ids=["transient", "permanent", "unexpected-exception"])
def test_commit_failure(error: Exception, expected: bytes) -> None:
    """A failed commit is 451 when transient or unexpected, 554 when permanent, never 250."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    take(transport)
    committed = harness.sink.writers[0].committed
    assert committed is not None
    committed.errback(error)
    assert take(transport) == expected


def test_sink_begin_failure_answers_451_at_end(harness: Harness) -> None:
    """If the sink cannot start a message, the client gets 451 after its DATA, not 250."""
    harness.sink.begin_error = DeliveryFailed("maildir missing")
    protocol, transport = harness.connect()
    take(transport)
    protocol.dataReceived(ENVELOPE + BODY + b".\r\nNOOP\r\n")
    assert take(transport).endswith(replies.START_MAIL_INPUT + replies.LOCAL_ERROR + replies.OK)


def test_sink_write_failure_aborts_writer(harness: Harness) -> None:
    """A write error aborts the writer and is answered 451 at the end of DATA."""
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE)
    harness.sink.write_error = DeliveryFailed("disk full")
    protocol.dataReceived(BODY + b".\r\n")
    assert harness.sink.writers[0].aborted
    assert harness.sink.writers[0].committed is None
    assert take(transport).endswith(replies.LOCAL_ERROR)


def test_oversized_message_aborted(harness: Harness) -> None:
    """Past max_message_size the writer is aborted, gets nothing more, and the client gets 552."""
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE)
    line = b"x" * 98 + b"\r\n"
    for _ in range(100):
        protocol.dataReceived(line)
    protocol.dataReceived(b".\r\n")
    writer = harness.sink.writers[0]
    assert writer.aborted and writer.committed is None
    assert sum(map(len, writer.chunks[1:])) <= SETTINGS.max_message_size
    assert take(transport).endswith(replies.SIZE_EXCEEDED)


def test_connection_lost_in_data_aborts_writer(harness: Harness) -> None:
    """A client that disconnects inside DATA leaves nothing behind."""
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + b"partial\r\n")
    transport.loseConnection()
    assert harness.sink.writers[0].aborted
    assert harness.server.active_connections == 0


def test_idle_timeout(harness: Harness) -> None:
    """A silent client gets 421 4.4.2 after idle_timeout and is disconnected."""
    _protocol, transport = harness.connect()
    take(transport)
    harness.clock.advance(59)
    assert transport.connected
    harness.clock.advance(1)
    assert take(transport) == replies.idle_timeout("mx.example.com")
    assert not transport.connected
    assert harness.server.active_connections == 0


def test_idle_timer_reset_by_input(harness: Harness) -> None:
    """Every command received restarts the idle timer."""
    protocol, transport = harness.connect()
    for _ in range(5):
        harness.clock.advance(50)
        protocol.dataReceived(b"NOOP\r\n")
    harness.clock.advance(50)
    assert transport.connected
    harness.clock.advance(10)
    assert not transport.connected


def test_command_line_must_arrive_within_idle_timeout(harness: Harness) -> None:
    """Slowloris: bytes of one command line trickling in do not keep a connection forever;
    the line must be complete within idle_timeout of its first byte."""
    protocol, transport = harness.connect()
    take(transport)
    protocol.dataReceived(b"N")
    for _ in range(2):
        harness.clock.advance(25)
        protocol.dataReceived(b"O")
    harness.clock.advance(9)
    assert transport.connected
    harness.clock.advance(1)
    assert take(transport) == replies.idle_timeout("mx.example.com")
    assert not transport.connected


def test_completed_lines_restart_the_command_deadline(harness: Harness) -> None:
    """A line that ends in time clears the deadline: the next line gets a full idle period."""
    protocol, transport = harness.connect()
    protocol.dataReceived(b"NO")
    harness.clock.advance(50)
    protocol.dataReceived(b"OP\r\nNO")
    harness.clock.advance(50)
    assert transport.connected
    protocol.dataReceived(b"OP\r\n")
    harness.clock.advance(59)
    assert transport.connected


def test_tls_client_hello_on_the_plain_port_is_told_at_once(harness: Harness) -> None:
    """A TLS ClientHello sent where SMTP is expected gets one 421 naming the mistake and a close,
    not a string of syntax errors until the idle timeout."""
    protocol, transport = harness.connect()
    take(transport)
    protocol.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert take(transport) == replies.TLS_ON_PLAIN_PORT
    assert not transport.connected


def test_no_idle_timeout_while_delivering() -> None:
    """Waiting for our own disk is not the client's idleness."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    harness.clock.advance(500)
    assert transport.connected
    committed = harness.sink.writers[0].committed
    assert committed is not None
    committed.callback(None)
    assert b"queued" in take(transport)


def test_client_that_never_reads_is_aborted(harness: Harness) -> None:
    """After a close, a connection still open one idle period later is aborted."""
    _protocol, _ = harness.connect()
    transport = fake_transport()  # never reports connectionLost by itself
    protocol2: Any = harness.server.plain_factory().buildProtocol(PEER)
    protocol2.makeConnection(transport)
    protocol2.dataReceived(b"QUIT\r\n")
    assert transport.disconnecting and not transport.disconnected
    harness.clock.advance(60)
    assert transport.disconnected


def test_write_backpressure_pauses_reading() -> None:
    """When our write buffer is full reading stops; delivery and backpressure pauses combine."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n" + b"NOOP\r\n" * (PAUSE_INPUT_BYTES // 6 + 1))
    protocol.pauseProducing()
    protocol.resumeProducing()
    assert transport.producerState == "paused"  # still holding too much input for the delivery


class TCPLike:
    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


def tcp_like() -> TCPLike:
    tcp = TCPLike()
    directlyProvides(tcp, ITCPTransport)
    return tcp


class Wrapper:
    def __init__(self, transport: object) -> None:
        self.transport = transport


def test_tcp_nodelay_through_wrappers() -> None:
    """TCP_NODELAY is set on the TCP transport found under TLS wrappers."""
    tcp = tcp_like()
    assert set_tcp_nodelay(Wrapper(Wrapper(tcp)))
    assert tcp.nodelay
    assert not set_tcp_nodelay(fake_transport())


def test_tcp_nodelay_set_on_connect(harness: Harness) -> None:
    """Each new connection turns Nagle's algorithm off."""
    protocol: Any = harness.server.plain_factory().buildProtocol(PEER)
    tcp = fake_transport()
    nodelay = tcp_like()
    tcp.setTcpNoDelay = nodelay.setTcpNoDelay
    directlyProvides(tcp, ITCPTransport)
    protocol.makeConnection(tcp)
    assert nodelay.nodelay


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    captured: list[LogEvent] = []
    observer: Any = captured.append
    globalLogPublisher.addObserver(observer)
    yield captured
    globalLogPublisher.removeObserver(observer)


def test_logs_message_and_connection(harness: Harness, events: list[LogEvent]) -> None:
    """One log line per message (sender, recipients, size, result) and one per connection."""
    protocol, _transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\nQUIT\r\n")
    [message] = [e for e in events if "queue_id" in e]
    assert (message["sender"], message["rcpts"], message["size"], message["result"]) == (
        "alice@example.net", 1, len(BODY), "queued")
    [closed] = [e for e in events if "close_reason" in e]
    assert (closed["peer"], closed["close_reason"], closed["messages"]) == ("192.0.2.7", "quit", 1)


def test_logs_message_refused_at_mail_for_its_size(harness: Harness,
                                                   events: list[LogEvent]) -> None:
    """MAIL with SIZE= over max_message_size is answered 552 and logged as a refused message
    (sender, size, limit, client), like one refused at DATA."""
    protocol, transport = harness.connect()
    take(transport)
    protocol.dataReceived(b"EHLO c.example\r\nMAIL FROM:<a@b.example> SIZE=999999999\r\n")
    assert take(transport).endswith(replies.SIZE_EXCEEDED)
    [message] = [e for e in events if "queue_id" in e]
    assert (message["sender"], message["rcpts"], message["size"]) == ("a@b.example", 0, 999_999_999)
    assert formatEvent(message) == (
        "message - from=<a@b.example> rcpts=0 size=999999999 refused: message size 999999999 "
        "exceeds max_message_size 5000 (MAIL from 192.0.2.7)")


def test_one_timer_not_moved_per_packet(harness: Harness) -> None:
    """The adapter keeps one timer per connection and does not touch it for each packet
    (a timer-heap update per read costs CPU): it fires, finds the later deadline, re-arms."""
    protocol, transport = harness.connect()
    [timer] = harness.clock.getDelayedCalls()
    armed_at = timer.getTime()
    for _ in range(10):
        harness.clock.advance(5)
        protocol.dataReceived(b"NOOP\r\n")
    assert harness.clock.getDelayedCalls() == [timer] and timer.getTime() == armed_at
    harness.clock.advance(armed_at - harness.clock.seconds())
    [rearmed] = harness.clock.getDelayedCalls()
    assert rearmed.getTime() == harness.clock.seconds() - 10 + SETTINGS.idle_timeout
    assert transport.connected


def test_delivery_answered_at_once_keeps_the_session_order_of_pause_and_resume() -> None:
    """A sink that answers inside the commit call, with more than PAUSE_INPUT_BYTES pipelined
    behind the message: the pause and the resume are carried out in the session's order, so
    reading goes on and every command is answered."""
    harness = Harness(auto_commit=True)
    protocol, transport = harness.connect()
    take(transport)
    count = PAUSE_INPUT_BYTES // 6 + 1
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n" + b"NOOP\r\n" * count)
    assert transport.producerState == "producing"
    out = take(transport)
    assert b"queued as" in out and out.count(replies.OK) == count


def test_commit_after_the_connection_is_lost_is_logged_not_answered(
        events: list[LogEvent]) -> None:
    """A message whose commit ends after the client left: nothing is written, and its log
    line says it was not acknowledged."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    take(transport)
    transport.loseConnection()
    committed = harness.sink.writers[0].committed
    assert committed is not None
    committed.callback(None)
    assert take(transport) == b""
    [message] = [e for e in events if "queue_id" in e]
    assert message["result"] == ("queued (connection already lost: not acknowledged, the client "
                                 "will retry)")
