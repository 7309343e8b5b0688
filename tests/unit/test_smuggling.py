"""DATA framing: only CRLF.CRLF ends a message (SMTP smuggling), dot-unstuffing,
bare CR/LF, NUL, over-long lines and the size limit."""

from __future__ import annotations

import pytest

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.actions import AbortMessage, Action, EndMessage, Log, MessageData, Reply
from elemta_smtp.smtp.dataframe import DataFramer
from elemta_smtp.smtp.session import Session, SessionSettings
from elemta_smtp.smtp.states import State

INJECTED = (b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nforged\r\n")

# (separator the attacker hopes ends DATA, whether it contains a bare CR/LF)
SMUGGLING = [
    pytest.param(b"\n.\n", id="lf-dot-lf"),
    pytest.param(b"\n.\r\n", id="lf-dot-crlf"),
    pytest.param(b"\r.\r", id="cr-dot-cr"),
    pytest.param(b"\r\n.\n", id="crlf-dot-lf"),
    pytest.param(b"\r.\r\n", id="cr-dot-crlf"),
    pytest.param(b"\r\n.\r", id="crlf-dot-cr"),
    pytest.param(b"\n.\r", id="lf-dot-cr"),
    pytest.param(b"\r.\n", id="cr-dot-lf"),
    pytest.param(b"\r\n\r.\r\n", id="crlf-cr-dot-crlf"),
    pytest.param(b"\n\n.\n\n", id="double-lf"),
]
NUL_SMUGGLING = [
    pytest.param(b"\r\n\x00.\r\n", id="crlf-nul-dot-crlf"),
    pytest.param(b"\r\n.\x00\r\n", id="crlf-dot-nul-crlf"),
    pytest.param(b"\r\n.\x00\n", id="crlf-dot-nul-lf"),
]


def settings(bare_newline: str = "normalize", max_message_size: int = 100_000) -> SessionSettings:
    return SessionSettings(hostname="mx.example.com", local_domains=frozenset({"example.com"}),
                           bare_newline=bare_newline, max_message_size=max_message_size)


def in_data(s: SessionSettings) -> Session:
    session = Session(s, "192.0.2.7", now=lambda: 0.0, make_id=lambda: "QID1")
    actions = session.receive(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
    assert actions[-1] == Reply(replies.START_MAIL_INPUT)
    return session


def stored(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, MessageData))


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def no_bare_newlines(text: bytes) -> bool:
    crlf = text.count(b"\r\n")
    return text.count(b"\r") == crlf and text.count(b"\n") == crlf


@pytest.mark.parametrize("separator", SMUGGLING)
def test_smuggled_end_is_message_text_when_normalizing(separator: bytes) -> None:
    """A fake end-of-data does not end the message; the commands after it are text, with CRLF line ends."""
    session = in_data(settings("normalize"))
    actions = session.receive(b"Subject: one\r\n\r\nhello" + separator + INJECTED + b".\r\nNOOP\r\n")
    assert [a for a in actions if not isinstance(a, MessageData)] == [EndMessage(len_of(actions))]
    text = stored(actions)
    assert b"MAIL FROM:<admin@example.com>\r\n" in text
    assert no_bare_newlines(text)
    assert session.state is State.DELIVERING
    assert without_logs(session.delivery_done(None)) == [Reply(replies.queued("QID1")), Reply(replies.OK)]


def len_of(actions: list[Action]) -> int:
    end = [a for a in actions if isinstance(a, EndMessage)]
    return end[0].size if end else -1


@pytest.mark.parametrize("separator", SMUGGLING)
def test_smuggled_end_refuses_message_when_rejecting(separator: bytes) -> None:
    """With bare_newline = "reject" a message with a fake end-of-data is refused at its real end."""
    session = in_data(settings("reject"))
    actions = session.receive(b"Subject: one\r\n\r\nhello" + separator + INJECTED + b".\r\nNOOP\r\n")
    assert AbortMessage("bare LF or CR in message") in actions
    assert [a for a in actions if isinstance(a, Reply)] == [
        Reply(replies.DATA_BARE_NEWLINE), Reply(replies.OK)]
    assert not any(isinstance(a, EndMessage) for a in actions)


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("separator", NUL_SMUGGLING)
def test_nul_refuses_message(separator: bytes, mode: str) -> None:
    """A NUL byte near a would-be end marker refuses the message (554 5.6.0) at the real end."""
    session = in_data(settings(mode))
    actions = session.receive(b"hello" + separator + INJECTED + b".\r\nNOOP\r\n")
    replies_sent = [a.data for a in actions if isinstance(a, Reply)]
    assert replies_sent == [replies.DATA_NUL, replies.OK]
    assert session.state is State.GREETED


@pytest.mark.parametrize("separator", SMUGGLING)
def test_smuggling_split_at_every_byte(separator: bytes) -> None:
    """Fed one byte at a time the outcome and stored text are the same as in one piece."""
    message = b"Subject: one\r\n\r\nhello" + separator + INJECTED + b".\r\n"
    whole = in_data(settings()).receive(message)
    session = in_data(settings())
    pieces: list[Action] = []
    for i in range(len(message)):
        pieces += session.receive(message[i:i + 1])
    assert stored(pieces) == stored(whole)
    assert isinstance(pieces[-1], EndMessage)


UNSTUFFING = [
    pytest.param(b"..leading dot\r\n", b".leading dot\r\n", id="double-dot"),
    pytest.param(b".x\r\n", b"x\r\n", id="single-dot-removed"),
    pytest.param(b"a\r\n...\r\n", b"a\r\n..\r\n", id="dots-only-line"),
    pytest.param(b"a\r\n..\r\n", b"a\r\n.\r\n", id="stuffed-end-marker"),
    pytest.param(b"a.b\r\n", b"a.b\r\n", id="inner-dot-kept"),
    pytest.param(b"", b"", id="empty-message"),
]


@pytest.mark.parametrize(("sent", "expected"), UNSTUFFING)
def test_dot_unstuffing(sent: bytes, expected: bytes) -> None:
    """A leading dot is removed from each line (RFC 5321 4.5.2); the rest is kept as sent."""
    session = in_data(settings())
    actions = session.receive(sent + b".\r\n")
    assert stored(actions) == expected
    assert isinstance(actions[-1], EndMessage)


def test_dot_stuffing_across_chunks() -> None:
    """A line's leading dot that arrives in the next packet is still unstuffed."""
    session = in_data(settings())
    actions = session.receive(b"abc\r\n") + session.receive(b"..def\r\n.") + session.receive(b"\r\n")
    assert stored(actions) == b"abc\r\n.def\r\n"
    assert isinstance(actions[-1], EndMessage)


def test_end_marker_split_across_chunks() -> None:
    """CRLF.CRLF split over packets still ends the message exactly once."""
    session = in_data(settings())
    actions: list[Action] = []
    for piece in (b"body\r", b"\n", b".", b"\r", b"\nNOOP\r\n"):
        actions += session.receive(piece)
    assert stored(actions) == b"body\r\n"
    assert isinstance(actions[-1], EndMessage)
    assert session.delivery_done(None)[-1] == Reply(replies.OK)


def test_bare_newlines_normalized() -> None:
    """With "normalize" lone LF and lone CR become CRLF in the stored message."""
    session = in_data(settings())
    actions = session.receive(b"a\nb\rc\r\n.\r\n")
    assert stored(actions) == b"a\r\nb\r\nc\r\n"


def test_long_line_refused_at_end_and_session_stays_in_step() -> None:
    """A line over 998 characters refuses the message at its end; the text after it is never a command."""
    session = in_data(settings())
    actions = session.receive(b"x" * 5000 + b"\r\n" + INJECTED + b".\r\nNOOP\r\n")
    assert AbortMessage("line too long") in actions
    assert [a.data for a in actions if isinstance(a, Reply)] == [replies.DATA_LINE_TOO_LONG, replies.OK]
    assert stored(actions) == b""


def test_endless_line_is_not_buffered() -> None:
    """Megabytes without a line end are read and dropped, not kept in memory."""
    session = in_data(settings(max_message_size=10**9))
    for _ in range(100):
        assert not any(isinstance(a, MessageData) for a in session.receive(b"y" * 65536))
    assert len(session._buf) == 0
    framer = session._framer
    assert framer is not None and len(framer._pending) <= 4
    actions = session.receive(b"\r\n.\r\n")
    assert [a.data for a in actions if isinstance(a, Reply)] == [replies.DATA_LINE_TOO_LONG]


@pytest.mark.parametrize(("length", "accepted"), [(998, True), (999, False)], ids=["998", "999"])
def test_line_length_limit(length: int, accepted: bool) -> None:
    """998 characters per line is allowed, 999 is not (RFC 5322 2.1.1)."""
    session = in_data(settings())
    actions = session.receive(b"a\r\n" + b"z" * length + b"\r\nb\r\n.\r\n")
    assert isinstance(actions[-1], EndMessage) is accepted


def test_size_limit_stops_writing_and_drains() -> None:
    """Past max_message_size nothing more is written, the message is dropped, and 552 comes at its end."""
    session = in_data(settings(max_message_size=2000))
    line = b"a" * 98 + b"\r\n"
    first = session.receive(line * 15)
    assert len(stored(first)) == 1500
    second = session.receive(line * 10)
    assert stored(second) == b""
    assert without_logs(second) == [AbortMessage("message too big")]
    assert session.receive(line * 1000) == []
    last = session.receive(b".\r\nNOOP\r\n")
    assert last == [Reply(replies.SIZE_EXCEEDED), Reply(replies.OK)]


def test_framer_returns_bytes_after_end() -> None:
    """The framer hands back exactly the bytes after CRLF.CRLF (pipelined commands)."""
    framer = DataFramer(max_size=1000, reject_bare_newline=False)
    text, rest = framer.feed(b"hi\r\n.\r\nQUIT\r\n")
    assert (text, rest) == (b"hi\r\n", b"QUIT\r\n")
    assert framer.size == 4


def test_big_message_in_chunks_round_trips() -> None:
    """A large dot-stuffed message fed in odd-sized chunks is stored exactly as the original."""
    original = b"".join(b".line %d\r\n" % i if i % 7 == 0 else b"line %d\r\n" % i for i in range(20000))
    stuffed = original.replace(b"\r\n.", b"\r\n..")
    stuffed = (b"." + stuffed) if stuffed.startswith(b".") else stuffed
    framer = DataFramer(max_size=10**7, reject_bare_newline=True)
    data = stuffed + b".\r\n"
    out, rest = [], None
    for i in range(0, len(data), 4093):
        text, rest = framer.feed(data[i:i + 4093])
        out.append(text)
    assert framer.error is None
    assert rest == b""
    assert b"".join(out) == original
