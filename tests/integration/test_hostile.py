"""Hostile clients against the real ``elemta serve`` on 127.0.0.1, command channel:
STARTTLS injection, SMTP smuggling, over-long lines, limits, relay and user checks,
non-SMTP clients. Raw sockets, so every byte on the wire is ours.

The ``Wire`` client and the Maildir/RSS helpers here are shared by the other
``test_hostile_*.py`` files (resources, TLS, process life).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elemta_smtp.smtp import replies
from tests.support import Daemon, Setup, client_context, running_daemon

HOST = "127.0.0.1"
DEADLINE = 10.0  # seconds any single wait may take before the test fails
CRLF = b"\r\n"
# One whole reply: any "ddd-" lines, then the "ddd " (or bare "ddd") last line.
_REPLY = re.compile(rb"\A(?:\d{3}-[^\n]*\n)*\d{3}(?:[ \r][^\n]*)?\n")
_LINE = re.compile(rb"\A[^\n]*\n")


class Wire:
    """A raw SMTP client socket: send any bytes, read whole replies under a deadline."""

    def __init__(self, port: int, timeout: float = DEADLINE) -> None:
        self.sock: socket.socket = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """The next whole reply, CRLFs included; fails on EOF or on a line that is no reply."""
        while True:
            match = _REPLY.match(self.buf)
            if match is not None:
                self.buf = self.buf[match.end():]
                return match.group(0)
            line = _LINE.match(self.buf)
            if line is not None and not re.match(rb"\d{3}[- \r]", line.group(0)):
                raise AssertionError(f"not an SMTP reply: {self.buf[:200]!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the connection; unread: {self.buf!r}")
            self.buf += chunk

    def command(self, line: bytes) -> bytes:
        self.send(line + CRLF)
        return self.reply()

    def replies(self, count: int) -> list[bytes]:
        return [self.reply() for _ in range(count)]

    def wait_closed(self, timeout: float = DEADLINE) -> bytes:
        """Read until the server closes the connection; returns what it sent meanwhile."""
        deadline = time.monotonic() + timeout
        data, self.buf = self.buf, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connection still open after {timeout}s; got {data!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            except TimeoutError:
                continue
            if not chunk:
                return data
            data += chunk

    def starttls(self, context: ssl.SSLContext) -> None:
        """Handshake on this socket (after a 220 to STARTTLS, or on the implicit-TLS port)."""
        assert self.buf == b"", f"plaintext left unread before TLS: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock)




def greeted(port: int, helo: bytes = b"EHLO client.test") -> Wire:
    """A connection that read the 220 greeting and said EHLO (the reply is checked)."""
    wire = Wire(port)
    assert wire.reply().startswith(b"220 ")
    assert wire.command(helo).startswith(b"250")
    return wire


def open_data(wire: Wire, recipients: list[str]) -> None:
    """MAIL, RCPT for each recipient and DATA, each answered as a good client expects."""
    assert wire.command(b"MAIL FROM:<sender@client.test>") == replies.SENDER_OK
    for rcpt in recipients:
        assert wire.command(b"RCPT TO:<%s>" % rcpt.encode()) == replies.RECIPIENT_OK
    assert wire.command(b"DATA") == replies.START_MAIL_INPUT


def maildir(setup: Setup, user: str, sub: str = "new") -> list[Path]:
    folder = setup.maildir_root / "example.com" / user / sub
    return sorted(folder.iterdir()) if folder.exists() else []


def all_stored(setup: Setup) -> list[Path]:
    """Every file in any new/ under maildir_root."""
    root = setup.maildir_root
    return sorted(root.glob("*/*/new/*")) if root.exists() else []


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of process ``pid`` in KiB: now (VmRSS) or its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak_rss(pid: int) -> int:
    """Reset the peak-RSS mark of ``pid`` (Linux clear_refs 5) and return its RSS in KiB, so
    that a later ``rss_kib(pid, "VmHWM")`` shows the most memory it held in between."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_kib(pid)


def all_greeted(port: int, count: int) -> bool:
    """Whether ``count`` simultaneous new connections all get the 220 greeting. They are then
    ended with QUIT and the server's close awaited, so their slots are free again on return."""
    wires: list[Wire] = []
    try:
        wires = [Wire(port) for _ in range(count)]
        if not all(w.reply().startswith(b"220 ") for w in wires):
            return False
        for wire in wires:
            assert wire.command(b"QUIT") == replies.BYE
            wire.wait_closed()
        return True
    except ConnectionError:
        return False
    finally:
        for wire in wires:
            wire.close()




# --- daemons --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The default daemon: bare_newline = normalize, max_recipients 3, max_errors 5."""
    setup = Setup(tmp_path_factory.mktemp("hostile"))
    setup.write({"server": {"max_recipients": 3, "max_errors": 5}})
    with running_daemon(setup) as d:
        yield d


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """bare_newline = reject, and only alice and bob are local users."""
    setup = Setup(tmp_path_factory.mktemp("hostile-strict"))
    setup.write({"delivery": {"bare_newline": "reject", "local_users": ["alice", "bob"]}})
    with running_daemon(setup) as d:
        yield d


# --- STARTTLS injection (CVE-2011-0411 class) -------------------------------------------

def test_starttls_injection_in_the_same_packet_is_not_executed(daemon: Daemon) -> None:
    """A MAIL FROM sent in the same packet as STARTTLS is discarded: after the handshake RCPT
    gets 503 (no MAIL), MAIL gets 503 (EHLO needed again) and EHLO no longer offers STARTTLS."""
    with greeted(daemon.setup.smtp_port) as wire:
        wire.send(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n")
        assert wire.reply() == replies.READY_FOR_TLS
        wire.starttls(client_context())
        assert wire.command(b"RCPT TO:<alice@example.com>") == replies.NEED_MAIL
        assert wire.command(b"MAIL FROM:<a@client.test>") == replies.NEED_HELO
        ehlo = wire.command(b"EHLO client.test")
        assert ehlo.startswith(b"250-") and b"STARTTLS" not in ehlo
        assert wire.command(b"RCPT TO:<alice@example.com>") == replies.NEED_MAIL
        assert wire.command(b"QUIT") == replies.BYE


def test_starttls_injection_in_a_later_segment_is_never_answered_in_plaintext(daemon: Daemon) -> None:
    """Plaintext sent after STARTTLS but before the handshake, in its own segment, is never
    executed: the only plaintext reply is 220, and if TLS still comes up the session is fresh."""
    with greeted(daemon.setup.smtp_port) as wire:
        wire.send(b"STARTTLS\r\n")
        wire.send(b"MAIL FROM:<injected@attacker.test>\r\nRCPT TO:<alice@example.com>\r\n")
        assert wire.reply() == replies.READY_FOR_TLS
        try:
            wire.starttls(client_context())
        except (ssl.SSLError, ConnectionError):
            return  # the plaintext went into the TLS layer and broke the handshake: fine
        assert wire.command(b"DATA") == replies.NEED_MAIL


def test_starttls_on_the_implicit_tls_port_is_refused(daemon: Daemon) -> None:
    """STARTTLS inside implicit TLS gets 503 5.5.1 and the session goes on."""
    wire = Wire(daemon.setup.smtps_port)
    wire.starttls(client_context())
    with wire:
        assert wire.reply().startswith(b"220 ")
        ehlo = wire.command(b"EHLO client.test")
        assert b"STARTTLS" not in ehlo
        assert wire.command(b"STARTTLS") == replies.TLS_ALREADY_ACTIVE
        assert wire.command(b"NOOP") == replies.OK


# --- SMTP smuggling ---------------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<mallory@example.com>\r\nDATA\r\n"
            b"From: evil@attacker.test\r\n\r\nsmuggled\r\n")
SMUGGLING = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-crlf": b"\r.\r\n",
    "lf-dot-cr": b"\n.\r",
    "cr-lf-dot-cr-lf-split": b"\r\r\n.\n\r\n",
}


def smuggle(wire: Wire, user: str, separator: bytes) -> bytes:
    """Send one message whose body hides a second one behind ``separator``; return the reply."""
    open_data(wire, [f"{user}@example.com"])
    wire.send(b"From: a@client.test\r\nSubject: smuggle\r\n\r\nfirst" + separator + SMUGGLED
              + b".\r\n")
    return wire.reply()


@pytest.mark.parametrize("separator", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggled_message_is_text_when_normalizing(daemon: Daemon, separator: bytes) -> None:
    """Only CRLF.CRLF ends DATA: a fake end of data is stored (normalized to CRLF) as part of
    the one message; the hidden MAIL/RCPT/DATA never run, so mallory gets nothing."""
    setup = daemon.setup
    user = "smuggle-" + separator.hex()
    with greeted(setup.smtp_port) as wire:
        assert smuggle(wire, user, separator).startswith(b"250 2.0.0 OK: queued as ")
        assert wire.command(b"NOOP") == replies.OK  # exactly one reply: nothing was smuggled
    [stored] = maildir(setup, user)
    body = stored.read_bytes()
    assert b"MAIL FROM:<evil@attacker.test>" in body and body.endswith(b"smuggled\r\n")
    assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n")
    assert maildir(setup, "mallory") == []


@pytest.mark.parametrize("separator", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggled_message_is_refused_in_reject_mode(strict: Daemon, separator: bytes) -> None:
    """With bare_newline = reject a body with a lone CR or LF gets 554 5.6.0 and nothing is stored."""
    setup = strict.setup
    with greeted(setup.smtp_port) as wire:
        assert smuggle(wire, "alice", separator) == replies.DATA_BARE_NEWLINE
        assert wire.command(b"NOOP") == replies.OK
    assert all_stored(setup) == []


NUL_VARIANTS = {"nul-before-dot": b"\r\n\x00.\r\n", "nul-after-dot": b"\r\n.\x00\r\n",
                "nul-in-text": b"\r\nab\x00c\r\n"}


@pytest.mark.parametrize("separator", NUL_VARIANTS.values(), ids=NUL_VARIANTS.keys())
def test_nul_bytes_refuse_the_message(daemon: Daemon, separator: bytes) -> None:
    """A NUL anywhere in the body refuses the whole message (554 5.6.0), no hidden second one."""
    setup = daemon.setup
    user = "nul-" + separator.hex()
    with greeted(setup.smtp_port) as wire:
        assert smuggle(wire, user, separator) == replies.DATA_NUL
        assert wire.command(b"NOOP") == replies.OK
    assert maildir(setup, user) == [] and maildir(setup, "mallory") == []


def test_dot_stuffed_end_marker_is_text(daemon: Daemon) -> None:
    """CRLF..CRLF is a dot-stuffed line ".", not the end: the message goes on to the real end."""
    setup = daemon.setup
    with greeted(setup.smtp_port) as wire:
        assert smuggle(wire, "stuffed", b"\r\n..\r\n").startswith(b"250 ")
        assert wire.command(b"NOOP") == replies.OK
    [stored] = maildir(setup, "stuffed")
    assert b"first\r\n.\r\nMAIL FROM:<evil@attacker.test>" in stored.read_bytes()


# --- over-long lines --------------------------------------------------------------------

def test_long_line_in_data_never_drops_back_into_command_mode(daemon: Daemon) -> None:
    """A 100 KB line in DATA: the commands after it are message text; at CRLF.CRLF the message
    gets 554 5.6.0 (line too long), then the next command is read as a command."""
    setup = daemon.setup
    with greeted(setup.smtp_port) as wire:
        open_data(wire, ["longline@example.com"])
        wire.send(b"Subject: long\r\n\r\n" + b"x" * 100_000 + b"\r\nNOOP\r\nRSET\r\n"
                  b"MAIL FROM:<evil@attacker.test>\r\n.\r\nNOOP\r\n")
        assert wire.reply() == replies.DATA_LINE_TOO_LONG
        assert wire.reply() == replies.OK
    assert maildir(setup, "longline") == [] and maildir(setup, "longline", "tmp") == []


def test_line_of_998_characters_is_accepted(daemon: Daemon) -> None:
    """The RFC 5322 limit itself (998 characters plus CRLF) is fine; 999 is refused."""
    setup = daemon.setup
    with greeted(setup.smtp_port) as wire:
        open_data(wire, ["line998@example.com"])
        wire.send(b"Subject: 998\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
        assert wire.reply().startswith(b"250 ")
        open_data(wire, ["line998@example.com"])
        wire.send(b"Subject: 999\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
        assert wire.reply() == replies.DATA_LINE_TOO_LONG
    assert len(maildir(setup, "line998")) == 1


def test_command_line_over_512_octets_gets_500_and_the_session_goes_on(daemon: Daemon) -> None:
    """A 513-octet command line gets 500 5.5.2 Line too long; the next command is served."""
    with greeted(daemon.setup.smtp_port) as wire:
        assert wire.command(b"NOOP " + b"a" * 506) == replies.LINE_TOO_LONG
        assert wire.command(b"NOOP " + b"a" * 505) == replies.OK  # exactly 512 with CRLF
        assert wire.command(b"NOOP") == replies.OK


# --- limits, relay, users, errors ---------------------------------------------------------

def test_recipients_beyond_the_limit_get_452(daemon: Daemon) -> None:
    """With max_recipients = 3 the 4th distinct RCPT gets 452 4.5.3 (a repeat does not count),
    and the message goes to the first three only."""
    setup = daemon.setup
    users = ["many-a", "many-b", "many-c", "many-d"]
    with greeted(setup.smtp_port) as wire:
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.SENDER_OK
        for user in users[:3]:
            assert wire.command(b"RCPT TO:<%s@example.com>" % user.encode()) == replies.RECIPIENT_OK
        assert wire.command(b"RCPT TO:<many-a@example.com>") == replies.RECIPIENT_OK
        assert wire.command(b"RCPT TO:<many-d@example.com>") == replies.TOO_MANY_RECIPIENTS
        assert wire.command(b"DATA") == replies.START_MAIL_INPUT
        assert wire.command(b"Subject: many\r\n\r\nhi\r\n.").startswith(b"250 ")
    assert [len(maildir(setup, u)) for u in users] == [1, 1, 1, 0]


RELAY = {
    "other-domain": b"victim@elsewhere.test",
    "subdomain": b"victim@sub.example.com",
    "address-literal": b"victim@[127.0.0.1]",
    "source-route": b"@example.com:victim@elsewhere.test",
    "trailing-dot-domain": b"victim@example.com.",
    "quoted-local-part": b'"victim@elsewhere.test"@example.com',
    "bang-path": b"elsewhere.test!victim",
}


@pytest.mark.parametrize("address", RELAY.values(), ids=RELAY.keys())
def test_relay_attempts_are_refused(daemon: Daemon, address: bytes) -> None:
    """Anything that is not a plain local mailbox is refused (554 5.7.1, or 501 syntax), never 250."""
    with greeted(daemon.setup.smtp_port) as wire:
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.SENDER_OK
        answer = wire.command(b"RCPT TO:<%s>" % address)
        assert answer in (replies.RELAY_DENIED, replies.BAD_RECIPIENT_SYNTAX, replies.SYNTAX_RCPT)
        assert wire.command(b"DATA") == replies.NO_VALID_RECIPIENTS
    assert not (daemon.setup.maildir_root / "elsewhere.test").exists()


def test_plain_relay_answer_is_554_5_7_1(daemon: Daemon) -> None:
    """The ordinary relay attempt gets exactly 554 5.7.1 Relay access denied."""
    with greeted(daemon.setup.smtp_port) as wire:
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.SENDER_OK
        assert wire.command(b"RCPT TO:<victim@elsewhere.test>") == replies.RELAY_DENIED


def test_unknown_local_user_gets_550_5_1_1(strict: Daemon) -> None:
    """With local_users = [alice, bob], carol@example.com gets 550 5.1.1; ALICE is alice."""
    with greeted(strict.setup.smtp_port) as wire:
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.SENDER_OK
        assert wire.command(b"RCPT TO:<carol@example.com>") == replies.USER_UNKNOWN
        assert wire.command(b"RCPT TO:<ALICE@Example.COM>") == replies.RECIPIENT_OK


def test_too_many_errors_get_421_and_disconnect(daemon: Daemon) -> None:
    """With max_errors = 5 the 5th refused command (here relay attempts and garbage) is followed
    by 421 4.7.0 Too many errors and the server closes the connection."""
    with greeted(daemon.setup.smtp_port) as wire:
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.SENDER_OK
        for _ in range(2):
            assert wire.command(b"RCPT TO:<v@elsewhere.test>") == replies.RELAY_DENIED
        assert wire.command(b"XYZZY") == replies.UNKNOWN_COMMAND
        assert wire.command(b"MAIL FROM:<s@client.test>") == replies.NESTED_MAIL
        wire.send(b"BOGUS\r\nNOOP\r\n")
        assert wire.reply() == replies.UNKNOWN_COMMAND
        assert wire.reply() == replies.TOO_MANY_ERRORS
        assert wire.wait_closed() == b""  # the pipelined NOOP was not answered


# --- not an SMTP client -------------------------------------------------------------------

def test_http_request_gets_one_421_and_close(daemon: Daemon) -> None:
    """A browser-style GET on the SMTP port gets 421 4.7.0 Non-SMTP command and is closed."""
    with Wire(daemon.setup.smtp_port) as wire:
        assert wire.reply().startswith(b"220 ")
        wire.send(b"GET / HTTP/1.1\r\nHost: mail.example.com\r\nUser-Agent: x\r\n\r\n")
        assert wire.reply() == replies.NON_SMTP_COMMAND
        assert wire.wait_closed() == b""


def test_binary_garbage_gets_errors_never_250(daemon: Daemon) -> None:
    """Random-looking bytes (control, 8-bit, NUL) on the plain port get only 5xx replies, the
    session ends at max_errors, and the daemon goes on serving others."""
    garbage = bytes(range(256)) * 4 + b"\r\n" + b"\xff\xfe\x00\r\n" + b"\x1b[2J\r\n" * 10
    with Wire(daemon.setup.smtp_port) as wire:
        assert wire.reply().startswith(b"220 ")
        wire.send(garbage)
        rest = wire.wait_closed()
    assert re.fullmatch(rb"(?:5\d\d [^\r\n]*\r\n)+421 4\.7\.0 Too many errors\r\n", rest), rest
    with greeted(daemon.setup.smtp_port) as other:
        assert other.command(b"NOOP") == replies.OK
