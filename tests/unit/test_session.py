"""The sans-IO SMTP session: commands, replies, limits, policy, delivery results."""

from __future__ import annotations

import pytest

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.actions import (
    AbortMessage,
    Action,
    BeginMessage,
    Close,
    EndMessage,
    Log,
    MessageData,
    Reply,
)
from elemta_smtp.smtp.session import Session, SessionSettings
from elemta_smtp.smtp.sink import DeliveryFailed
from elemta_smtp.smtp.states import State

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
SETTINGS = SessionSettings(
    hostname="mx.example.com",
    max_message_size=10_000,
    max_recipients=3,
    max_errors=5,
    local_domains=frozenset({"example.com", "example.org"}),
    starttls_available=True,
)


def new_session(settings: SessionSettings = SETTINGS, tls: bool = False) -> Session:
    """A greeted session; ``tls``: on the implicit-TLS port, handshake done."""
    session = Session(settings, "192.0.2.7", implicit_tls=tls, now=lambda: NOW, make_id=lambda: "QID1")
    session.start()
    if tls:
        session.tls_started()
    return session


def logged(actions: list[Action]) -> list[str]:
    """The log lines among ``actions``, as they read in the log."""
    return [a.text.format(**a.fields) for a in actions if isinstance(a, Log)]


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def replies_in(actions: list[Action]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Reply)]


def say(session: Session, data: bytes) -> list[bytes]:
    return replies_in(session.receive(data))


def in_transaction(settings: SessionSettings = SETTINGS) -> Session:
    session = new_session(settings)
    assert say(session, b"EHLO client.example.net\r\nMAIL FROM:<alice@example.net>\r\n"
                        b"RCPT TO:<bob@example.com>\r\n") == [
        replies.ehlo("mx.example.com", 10_000, True), replies.SENDER_OK, replies.RECIPIENT_OK]
    return session


def test_greeting() -> None:
    """The banner is 220 with the host name and "ESMTP elemta"."""
    session = Session(SETTINGS, "192.0.2.7")
    assert replies_in(session.start()) == [b"220 mx.example.com ESMTP elemta\r\n"]


def test_ehlo_advertises_extensions() -> None:
    """EHLO lists PIPELINING, SIZE <limit>, 8BITMIME, ENHANCEDSTATUSCODES and STARTTLS."""
    session = new_session()
    assert say(session, b"EHLO client.example.net\r\n") == [
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"]


@pytest.mark.parametrize(("available", "tls"), [(False, False), (True, True)],
                         ids=["starttls-unavailable", "already-tls"])
def test_ehlo_without_starttls(available: bool, tls: bool) -> None:
    """STARTTLS is advertised only before TLS and only when a certificate is available."""
    settings = SessionSettings(hostname="mx.example.com", starttls_available=available)
    [reply] = say(new_session(settings, tls=tls), b"EHLO c.example\r\n")
    assert b"STARTTLS" not in reply
    assert reply.endswith(b"250 ENHANCEDSTATUSCODES\r\n")


def test_helo() -> None:
    """HELO gets a plain 250 with the host name (no extensions)."""
    assert say(new_session(), b"HELO client.example.net\r\n") == [replies.helo("mx.example.com")]


GREETED = b"EHLO c.example\r\n"
MAIL = GREETED + b"MAIL FROM:<a@example.net>\r\n"
RCPT = MAIL + b"RCPT TO:<bob@example.com>\r\n"

# (setup sent first, command, expected reply to the command)
COMMANDS = [
    pytest.param(b"", b"NOOP", replies.OK, id="noop"),
    pytest.param(b"", b"NOOP anything", replies.OK, id="noop-with-argument"),
    pytest.param(b"", b"noop", replies.OK, id="lower-case-verb"),
    pytest.param(b"", b"VRFY bob", replies.CANNOT_VRFY, id="vrfy"),
    pytest.param(b"", b"VRFY", replies.SYNTAX_VRFY, id="vrfy-without-argument"),
    pytest.param(b"", b"HELP", replies.HELP, id="help"),
    pytest.param(RCPT, b"RSET", replies.RESET_OK, id="rset"),
    pytest.param(b"", b"RSET now", replies.SYNTAX_NO_PARAMETERS, id="rset-with-argument"),
    pytest.param(b"", b"FOO", replies.UNKNOWN_COMMAND, id="unknown-command"),
    pytest.param(b"", b"", replies.UNKNOWN_COMMAND, id="empty-line"),
    pytest.param(b"", b"EXPN staff", replies.NOT_IMPLEMENTED, id="expn-not-implemented"),
    pytest.param(b"", b"AUTH PLAIN", replies.NOT_IMPLEMENTED, id="auth-not-implemented"),
    pytest.param(b"", b"BDAT 10 LAST", replies.NOT_IMPLEMENTED, id="bdat-not-implemented"),
    pytest.param(b"", b"EHLO", replies.SYNTAX_EHLO, id="ehlo-without-name"),
    pytest.param(b"", b"HELO", replies.SYNTAX_HELO, id="helo-without-name"),
    pytest.param(b"", b"EHLO two words", replies.SYNTAX_EHLO, id="ehlo-two-words"),
    pytest.param(b"", b"EHLO [192.0.2.1]", replies.ehlo("mx.example.com", 10_000, True),
                 id="ehlo-address-literal"),
    pytest.param(b"", b"MAIL FROM:<a@example.net>", replies.NEED_HELO, id="mail-before-ehlo"),
    pytest.param(GREETED, b"RCPT TO:<bob@example.com>", replies.NEED_MAIL, id="rcpt-before-mail"),
    pytest.param(b"", b"RCPT TO:<bob@example.com>", replies.NEED_MAIL, id="rcpt-before-ehlo"),
    pytest.param(GREETED, b"DATA", replies.NEED_MAIL, id="data-before-mail"),
    pytest.param(MAIL, b"DATA", replies.NO_VALID_RECIPIENTS, id="data-without-recipient"),
    pytest.param(RCPT, b"DATA now", replies.SYNTAX_NO_PARAMETERS, id="data-with-argument"),
    pytest.param(MAIL, b"MAIL FROM:<b@example.net>", replies.NESTED_MAIL, id="nested-mail"),
    pytest.param(RCPT, b"MAIL FROM:<b@example.net>", replies.NESTED_MAIL, id="mail-after-rcpt"),
    pytest.param(GREETED, b"MAIL FROM:<>", replies.SENDER_OK, id="null-sender"),
    pytest.param(GREETED, b"MAIL FROM: <a@example.net>", replies.SENDER_OK, id="mail-space-after-colon"),
    pytest.param(GREETED, b"mail from:<a@example.net>", replies.SENDER_OK, id="mail-lower-case"),
    pytest.param(GREETED, b"MAIL FROM:a@example.net", replies.SYNTAX_MAIL, id="mail-without-brackets"),
    pytest.param(GREETED, b"MAIL FROM <a@example.net>", replies.SYNTAX_MAIL, id="mail-without-colon"),
    pytest.param(GREETED, b"MAIL TO:<a@example.net>", replies.SYNTAX_MAIL, id="mail-to"),
    pytest.param(GREETED, b"MAIL", replies.SYNTAX_MAIL, id="mail-without-argument"),
    pytest.param(GREETED, b"MAIL FROM:<a b@example.net>", replies.BAD_SENDER_SYNTAX, id="sender-space"),
    pytest.param(GREETED, b"MAIL FROM:<a@>", replies.BAD_SENDER_SYNTAX, id="sender-no-domain"),
    pytest.param(GREETED, b"MAIL FROM:<a..b@example.net>", replies.BAD_SENDER_SYNTAX, id="sender-dots"),
    pytest.param(GREETED, b"MAIL FROM:<@relay.example:a@example.net>", replies.BAD_SENDER_SYNTAX,
                 id="source-route"),
    pytest.param(GREETED, b'MAIL FROM:<"a b"@example.net>', replies.SENDER_OK, id="quoted-sender"),
    pytest.param(GREETED, b"MAIL FROM:<a@[192.0.2.1]>", replies.SENDER_OK, id="sender-literal"),
    pytest.param(GREETED, b"MAIL FROM:<a\x01@example.net>", replies.BAD_CHARACTERS, id="control-char"),
    pytest.param(GREETED, b"MAIL FROM:<a\x00@example.net>", replies.BAD_CHARACTERS, id="nul"),
    pytest.param(GREETED, b"MAIL FROM:<a\xc3\xa9@example.net>", replies.BAD_CHARACTERS, id="8-bit"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net>\tSIZE=1", replies.BAD_CHARACTERS, id="tab"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SIZE=9999", replies.SENDER_OK, id="size-ok"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SIZE=10001", replies.SIZE_EXCEEDED,
                 id="size-over-limit"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SIZE=big", replies.BAD_PARAMETER_VALUE,
                 id="size-not-a-number"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SIZE", replies.BAD_PARAMETER_VALUE,
                 id="size-without-value"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SIZE=1 SIZE=2", replies.BAD_PARAMETER_VALUE,
                 id="size-twice"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> BODY=8BITMIME", replies.SENDER_OK, id="body-8bitmime"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> body=7bit", replies.SENDER_OK, id="body-7bit"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> BODY=BINARYMIME", replies.UNKNOWN_PARAMETER,
                 id="body-binarymime"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> SMTPUTF8", replies.UNKNOWN_PARAMETER,
                 id="smtputf8-not-offered"),
    pytest.param(GREETED, b"MAIL FROM:<a@example.net> FOO=bar", replies.UNKNOWN_PARAMETER,
                 id="unknown-parameter"),
    pytest.param(b"HELO c.example\r\n", b"MAIL FROM:<a@example.net> SIZE=10", replies.UNKNOWN_PARAMETER,
                 id="parameter-after-helo"),
    pytest.param(MAIL, b"RCPT TO:<bob@example.com>", replies.RECIPIENT_OK, id="rcpt"),
    pytest.param(MAIL, b"RCPT TO:<Bob@EXAMPLE.org>", replies.RECIPIENT_OK, id="rcpt-domain-case"),
    pytest.param(MAIL, b"RCPT TO:<bob@example.net>", replies.RELAY_DENIED, id="relay-denied"),
    pytest.param(MAIL, b"RCPT TO:<bob@sub.example.com>", replies.RELAY_DENIED, id="subdomain-not-local"),
    pytest.param(MAIL, b"RCPT TO:<bob@[192.0.2.1]>", replies.RELAY_DENIED, id="literal-not-local"),
    pytest.param(MAIL, b"RCPT TO:<>", replies.BAD_RECIPIENT_SYNTAX, id="null-recipient"),
    pytest.param(MAIL, b"RCPT TO:<a/b@example.com>", replies.BAD_RECIPIENT_SYNTAX, id="slash-in-recipient"),
    pytest.param(MAIL, b'RCPT TO:<"a b"@example.com>', replies.BAD_RECIPIENT_SYNTAX, id="quoted-recipient"),
    pytest.param(MAIL, b"RCPT TO:bob@example.com", replies.SYNTAX_RCPT, id="rcpt-without-brackets"),
    pytest.param(MAIL, b"RCPT FROM:<bob@example.com>", replies.SYNTAX_RCPT, id="rcpt-from"),
    pytest.param(MAIL, b"RCPT TO:<bob@example.com> NOTIFY=NEVER", replies.UNKNOWN_PARAMETER,
                 id="rcpt-parameter"),
    pytest.param(MAIL, b"RCPT TO:<postmaster>", replies.RECIPIENT_OK, id="bare-postmaster"),
]


@pytest.mark.parametrize(("setup", "command", "expected"), COMMANDS)
def test_command_reply(setup: bytes, command: bytes, expected: bytes) -> None:
    """Each command gets the RFC 5321 reply with its enhanced status code."""
    session = new_session()
    session.receive(setup)
    assert say(session, command + b"\r\n") == [expected]


def test_size_over_the_limit_at_mail_is_a_refused_message() -> None:
    """MAIL with SIZE= over max_message_size: a refused-message log line (sender, size, reason,
    client), then 552; the session stays greeted and a smaller MAIL is accepted."""
    session = new_session()
    session.receive(b"EHLO c.example\r\n")
    actions = session.receive(b"MAIL FROM:<a@example.net> SIZE=999999999\r\n")
    assert logged(actions) == ["message - from=<a@example.net> rcpts=0 size=999999999 refused: "
                               "message size 999999999 exceeds max_message_size 10000 "
                               "(MAIL from 192.0.2.7)"]
    assert replies_in(actions) == [replies.SIZE_EXCEEDED]
    assert session.state is State.GREETED
    assert say(session, b"MAIL FROM:<a@example.net> SIZE=10000\r\n") == [replies.SENDER_OK]


@pytest.mark.parametrize("command", [
    pytest.param(b"MAIL FROM:<a@example.net> SIZE=10000", id="size-at-the-limit"),
    pytest.param(b"MAIL FROM:<a@example.net> SIZE=big", id="bad-size"),
    pytest.param(b"MAIL FROM:<a@example.net> FOO=1", id="other-refusal"),
])
def test_other_mail_commands_are_no_refused_message(command: bytes) -> None:
    """Only a SIZE= over the limit makes a refused-message action; other MAIL replies do not."""
    session = new_session()
    session.receive(b"EHLO c.example\r\n")
    assert [a for a in session.receive(command + b"\r\n") if not isinstance(a, Reply)] == []


def test_quit() -> None:
    """QUIT is answered 221 and the connection is closed."""
    session = new_session()
    actions = session.receive(b"QUIT\r\nNOOP\r\n")
    assert actions == [Reply(replies.BYE), Close()]
    assert session.state is State.CLOSING
    assert session.receive(b"NOOP\r\n") == []


def test_non_smtp_client_is_disconnected() -> None:
    """An HTTP request on the SMTP port gets one 421 and the connection is closed."""
    actions = new_session().receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert actions == [Reply(replies.NON_SMTP_COMMAND), Close()]


def test_rset_forgets_transaction() -> None:
    """After RSET a new MAIL is allowed and DATA needs MAIL again."""
    session = in_transaction()
    assert say(session, b"RSET\r\nDATA\r\nMAIL FROM:<>\r\n") == [
        replies.RESET_OK, replies.NEED_MAIL, replies.SENDER_OK]


def test_ehlo_resets_transaction() -> None:
    """A second EHLO ends the transaction in progress (RFC 5321 4.1.4)."""
    session = in_transaction()
    say(session, b"EHLO again.example\r\n")
    assert say(session, b"DATA\r\n") == [replies.NEED_MAIL]


def test_unknown_local_user() -> None:
    """With local_users set, other local parts are 550 5.1.1; known ones match case-insensitively."""
    settings = SessionSettings(hostname="mx.example.com", local_domains=frozenset({"example.com"}),
                               local_users=frozenset({"bob"}))
    session = new_session(settings)
    say(session, b"EHLO c.example\r\nMAIL FROM:<>\r\n")
    assert say(session, b"RCPT TO:<carol@example.com>\r\nRCPT TO:<BoB@Example.Com>\r\n") == [
        replies.USER_UNKNOWN, replies.RECIPIENT_OK]


def test_recipients_handed_over_lower_case_and_once() -> None:
    """The sink gets each recipient once, as local@domain in lower case."""
    session = in_transaction()
    say(session, b"RCPT TO:<Carol@Example.ORG>\r\nRCPT TO:<BOB@example.com>\r\n")
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert begin.recipients == ("bob@example.com", "carol@example.org")
    assert begin.sender == "alice@example.net"


def test_postmaster_goes_to_host_name() -> None:
    """RCPT TO:<postmaster> (no domain) is postmaster at the server's host name when that is local."""
    settings = SessionSettings(hostname="mx.example.com", local_domains=frozenset({"mx.example.com"}))
    session = new_session(settings)
    say(session, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<PostMaster>\r\n")
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert begin.recipients == ("postmaster@mx.example.com",)


def test_too_many_recipients() -> None:
    """Beyond max_recipients RCPT is 452 4.5.3 and the message keeps the first ones."""
    session = in_transaction()  # bob is recipient 1 of 3
    got = say(session, b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n"
                       b"RCPT TO:<e@example.com>\r\nRCPT TO:<f@example.com>\r\n")
    assert got == [replies.RECIPIENT_OK, replies.RECIPIENT_OK,
                   replies.TOO_MANY_RECIPIENTS, replies.TOO_MANY_RECIPIENTS]
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert len(begin.recipients) == 3


def test_too_many_recipients_is_not_an_error() -> None:
    """452 for too many recipients does not count towards max_errors."""
    session = in_transaction()
    session.receive(b"RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n")
    actions = session.receive(b"RCPT TO:<e@example.com>\r\n" * 10)
    assert replies_in(actions) == [replies.TOO_MANY_RECIPIENTS] * 10
    assert session.state is State.RCPT


def test_too_many_errors_disconnects() -> None:
    """After max_errors bad commands the client gets 421 4.7.0 and is disconnected."""
    session = new_session()  # max_errors=5
    actions = session.receive(b"FOO\r\n" * 4 + b"RCPT TO:<x@example.com>\r\nNOOP\r\n")
    assert actions == [Reply(replies.UNKNOWN_COMMAND)] * 4 + [
        Reply(replies.NEED_MAIL), Reply(replies.TOO_MANY_ERRORS), Close()]
    assert session.close_reason == "too many errors"


def test_relay_attempts_count_as_errors() -> None:
    """Rejected recipients count towards max_errors (address harvesting, relay probing)."""
    session = in_transaction()
    actions = session.receive(b"RCPT TO:<x@example.net>\r\n" * 5)
    assert actions[-2:] == [Reply(replies.TOO_MANY_ERRORS), Close()]


def test_command_line_too_long() -> None:
    """A command line over 512 octets gets 500 5.5.2 and the session goes on."""
    session = new_session()
    long_line = b"NOOP " + b"x" * 600 + b"\r\n"
    assert say(session, long_line + b"NOOP\r\n") == [replies.LINE_TOO_LONG, replies.OK]


def test_command_line_too_long_across_packets() -> None:
    """A long line arriving in pieces is answered once and its rest, up to CRLF, discarded."""
    session = new_session()
    assert say(session, b"MAIL FROM:<" + b"a" * 600) == [replies.LINE_TOO_LONG]
    assert say(session, b"b" * 10_000) == []
    assert say(session, b"@example.net>\r\nNOOP\r\n") == [replies.OK]


def test_command_line_of_512_octets_is_fine() -> None:
    """Exactly 512 octets including CRLF is the limit, not over it."""
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    assert say(new_session(), line) == [replies.OK]


def test_bare_lf_command_normalized() -> None:
    """With bare_newline = "normalize", a command ended by LF alone is accepted."""
    assert say(new_session(), b"NOOP\nNOOP\r\n") == [replies.OK, replies.OK]


def test_bare_lf_command_rejected() -> None:
    """With bare_newline = "reject", a command ended by LF alone is refused, not run."""
    settings = SessionSettings(hostname="mx.example.com", bare_newline="reject")
    assert say(new_session(settings), b"HELO x\nNOOP\r\n") == [replies.BARE_NEWLINE_COMMAND, replies.OK]


def test_pipelined_commands_answered_in_order() -> None:
    """Commands sent in one packet are all answered, in order."""
    session = new_session()
    got = say(session, b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<x@example.net>\r\n"
                       b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
    assert [replies.code(r) for r in got] == [250, 250, 554, 250, 354]


def test_command_split_across_packets() -> None:
    """A command arriving in several packets runs once it is complete."""
    session = new_session()
    assert say(session, b"NO") == []
    assert say(session, b"OP\r") == []
    assert say(session, b"\n") == [replies.OK]


def send_message(session: Session, body: bytes = b"Subject: hi\r\n\r\nHello\r\n") -> list[Action]:
    assert say(session, b"DATA\r\n") == [replies.START_MAIL_INPUT]
    return session.receive(body + b".\r\n")


def test_message_handed_over_then_answered_after_delivery() -> None:
    """End of DATA hands the message over without replying; 250 comes only from delivery_done."""
    session = in_transaction()
    actions = send_message(session)
    assert actions == [MessageData(b"Subject: hi\r\n\r\nHello\r\n"), EndMessage(22)]
    assert session.state is State.DELIVERING
    assert without_logs(session.delivery_done(None)) == [Reply(replies.queued("QID1"))]
    assert session.state.value == "greeted"
    assert session.messages == 1


@pytest.mark.parametrize(("failure", "expected"), [
    (DeliveryFailed("disk full", transient=True), replies.LOCAL_ERROR),
    (DeliveryFailed("mailbox is a file", transient=False), replies.DELIVERY_FAILED),
], ids=["transient-451", "permanent-554"])
def test_delivery_failure(failure: DeliveryFailed, expected: bytes) -> None:
    """A failed delivery is 451 4.3.0 when transient (never 5xx) and 554 when permanent."""
    session = in_transaction()
    send_message(session)
    assert replies_in(session.delivery_done(failure)) == [expected]
    assert session.messages == 0


def test_transient_failure_never_permanent_code() -> None:
    """The transient-failure reply is a 4xx code."""
    assert replies.code(replies.LOCAL_ERROR) == 451


def test_input_held_while_delivering() -> None:
    """Commands pipelined after the message wait until the delivery is answered."""
    session = in_transaction()
    send_message(session)
    assert session.receive(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\n") == []
    assert replies_in(session.delivery_done(None)) == [
        replies.queued("QID1"), replies.SENDER_OK, replies.RECIPIENT_OK]


def test_pipelined_data_and_body_in_one_packet() -> None:
    """A whole transaction, body and QUIT included, in one packet is read in order."""
    session = new_session()
    actions = session.receive(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                              b"body\r\n.\r\nQUIT\r\n")
    assert isinstance(actions[-1], EndMessage)
    assert without_logs(session.delivery_done(None)) == [
        Reply(replies.queued("QID1")), Reply(replies.BYE), Close()]


def test_second_message_on_same_connection() -> None:
    """After a delivered message the client can start another one."""
    session = in_transaction()
    send_message(session)
    session.delivery_done(None)
    assert say(session, b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n") == [
        replies.SENDER_OK, replies.RECIPIENT_OK, replies.START_MAIL_INPUT]


def test_received_header() -> None:
    """The Received header names the HELO name, peer IP, host, protocol, id, recipient and date."""
    session = in_transaction()
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert begin.received_header == (
        b"Received: from client.example.net ([192.0.2.7])\r\n"
        b"\tby mx.example.com (elemta) with ESMTP id QID1\r\n"
        b"\tfor <bob@example.com>; Tue, 14 Nov 2023 22:13:20 +0000\r\n")


def test_received_header_with_tls_and_several_recipients() -> None:
    """Over TLS the header says ESMTPS with version and cipher; with several recipients no "for"."""
    session = new_session(tls=True)
    session.tls_started("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    say(session, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert begin.received_header == (
        b"Received: from c ([192.0.2.7])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"
        b"\tby mx.example.com (elemta) with ESMTPS id QID1;\r\n"
        b"\tTue, 14 Nov 2023 22:13:20 +0000\r\n")


def test_received_header_helo_and_ipv6() -> None:
    """After HELO the protocol is SMTP; an IPv6 peer is written as an IPv6 address literal."""
    session = Session(SETTINGS, "2001:db8::1", now=lambda: NOW, make_id=lambda: "QID1")
    session.receive(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\n")
    [begin] = [a for a in session.receive(b"DATA\r\n") if isinstance(a, BeginMessage)]
    assert begin.received_header.startswith(b"Received: from c ([IPv6:2001:db8::1])\r\n")
    assert b" with SMTP id QID1" in begin.received_header


def test_idle_timeout() -> None:
    """On timeout the client gets 421 4.4.2 and the connection closes."""
    session = new_session()
    actions = session.timer_fired(NOW + SETTINGS.idle_timeout)
    assert without_logs(actions) == [Reply(replies.idle_timeout("mx.example.com")), Close()]
    assert replies.idle_timeout("mx.example.com") == (
        b"421 4.4.2 mx.example.com Idle timeout, closing connection\r\n")


def test_idle_timeout_in_data_drops_message() -> None:
    """A timeout in the middle of DATA drops the half-received message."""
    session = in_transaction()
    session.receive(b"DATA\r\npartial\r\n")
    actions = session.timer_fired(NOW + SETTINGS.idle_timeout)
    assert without_logs(actions)[0] == AbortMessage("idle timeout")
    assert actions[-1] == Close()


def test_shutdown_when_idle() -> None:
    """Shutdown closes an idle session at once with 421 4.3.2."""
    session = in_transaction()
    assert session.shutdown() == [Reply(replies.SHUTTING_DOWN), Close()]


def test_shutdown_finishes_message_first() -> None:
    """Shutdown during DATA lets the message finish and be answered, then says 421."""
    session = in_transaction()
    session.receive(b"DATA\r\nfirst line\r\n")
    assert session.shutdown() == []
    assert isinstance(session.receive(b".\r\nNOOP\r\n")[-1], EndMessage)
    assert without_logs(session.delivery_done(None)) == [
        Reply(replies.queued("QID1")), Reply(replies.SHUTTING_DOWN), Close()]


def test_connection_lost_in_data_aborts() -> None:
    """Losing the connection inside DATA drops the message."""
    session = in_transaction()
    session.receive(b"DATA\r\nabc\r\n")
    assert without_logs(session.connection_lost()) == [AbortMessage("connection lost")]
    assert session.state is State.CLOSED


def test_settings_from_config() -> None:
    """The daemon builds SessionSettings from the parsed elemta.toml (service.py)."""
    from elemta_smtp.config import parse_config
    from elemta_smtp.service import session_settings

    config = parse_config('[server]\nhostname = "mx.example.com"\nmax_recipients = 7\n'
                          'max_message_size = "1MB"\n[delivery]\nlocal_domains = ["Example.com"]\n'
                          'local_users = ["Bob"]\nbare_newline = "reject"\n')
    settings = session_settings(config, starttls_available=True)
    assert settings == SessionSettings(
        hostname="mx.example.com", max_message_size=1_000_000, max_recipients=7, max_errors=20,
        idle_timeout=300.0, local_domains=frozenset({"example.com"}), local_users=frozenset({"bob"}),
        bare_newline="reject", starttls_available=True, max_connections=1000)


def test_settings_reject_unknown_bare_newline_mode() -> None:
    """A bare_newline mode other than normalize/reject is a programming error."""
    with pytest.raises(ValueError, match="bare_newline"):
        SessionSettings(hostname="x", bare_newline="ignore")
