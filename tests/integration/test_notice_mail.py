"""Notice mail on the wire and on disk: the real ``Mailer`` (on the real reactor) sends a
real ``Notice`` to a real ``elemta serve`` (local delivery, both ``bare_newline`` modes) and
to a relay on 127.0.0.1 (aiosmtpd, plain and STARTTLS); the test reads the raw bytes that
were stored / received and checks them header by header and line end by line end."""

from __future__ import annotations

import datetime as dt
import gc
import ssl
import tempfile
import warnings
from collections.abc import Generator, Sequence
from contextlib import ExitStack
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.ssl import Certificate
from twisted.trial import unittest

from elemta_smtp.acme.mailer import Mailer, NotifyError
from elemta_smtp.acme.notices import Notice
from elemta_smtp.config import load_config, parse_config
from tests.certs import CA, make_ca, make_leaf
from tests.support import Setup, free_port, running_daemon

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
SENDER = "elemta@mail.example.com"
TOKEN = "urn:ietf:params:acme:error:" + "x" * 1200  # one certbot "word" longer than 998
PROSE = ("Detail: 192.0.2.1: Invalid response from http://mail.example.com/.well-known/"
         "acme-challenge/abc: 404 Not Found, and certbot says so on one very long line")
NON_ASCII = "Zertifikat für straße.example abgelehnt — échec, ✓ noch nicht"
SHORT_LINES = (".", ".hidden", "..two dots", "From nobody Sun Mar  1 12:00:00 2026",
               ">From quoted", NON_ASCII, "   indented   certbot   line")
BODY = ("Renewing the certificate for mail.example.com failed.\n\n"
        "Reason (from certbot):\n"
        + "\n".join(SHORT_LINES) + "\n"
        + f"{PROSE}\n{TOKEN}\nprogress 10%\rprogress 100%\r\n.\n"
        + "elemta tries again later.\n")
NOTICE = Notice(key="renewal-failed:straße", kind="renewal-failed",
                subject="TLS certificate renewal for mail.example.com FAILED — échec",
                body=BODY)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def check_raw_message(raw: bytes, recipients: Sequence[str], notice: Notice = NOTICE) -> EmailMessage:
    """``raw`` is a well-formed notice: CRLF line ends only, 7-bit, lines within RFC 5322's
    998, From/To/Subject/Date/Message-ID in the header section, the body text intact."""
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"", f"does not end in CRLF: {raw[-20:]!r}"
    bare = [line for line in lines if b"\r" in line or b"\n" in line]
    assert not bare, f"{len(bare)} lines with a bare CR or LF, the first: {bare[0][:80]!r}"
    assert raw.isascii(), "8-bit bytes without BODY=8BITMIME"
    assert max(map(len, lines)) <= 998
    head, blank, _ = raw.partition(b"\r\n\r\n")
    assert blank
    names = {line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")
             if line[:1] not in (b" ", b"\t")}
    assert {b"from", b"to", b"subject", b"date", b"message-id"} <= names, names
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    assert msg.defects == []
    assert msg["From"] == f"elemta <{SENDER}>"
    assert msg["To"] == ", ".join(recipients)
    assert msg["Subject"] == notice.subject
    assert msg["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert msg["Message-ID"].endswith("@mail.example.com>")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    content = msg.get_content().replace("\r\n", "\n")
    assert content.split() == notice.body.split()  # every word, in order
    body_lines = content.split("\n")
    for line in SHORT_LINES:  # short lines exactly as they were: dots, "From ", UTF-8
        assert line in body_lines, line
    assert TOKEN in body_lines
    return msg


class Recorder:
    """An aiosmtpd handler that keeps each message's DATA bytes (dot-unstuffed, line ends
    exactly as received)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


class LocalDeliveryTests(unittest.TestCase):
    """A notice delivered by the daemon's own plain listener into its Maildir."""

    def deliver(self, bare_newline: str) -> Deferred[bytes]:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        setup = Setup(Path(folder.name))
        setup.write({"delivery": {"bare_newline": bare_newline},
                     "notify": {"recipients": ["admin@example.com"], "sender": SENDER}})
        stack = ExitStack()
        self.addCleanup(stack.close)
        stack.enter_context(running_daemon(setup))
        mailbox = setup.maildir_root / "example.com" / "admin" / "new"

        def stored(_: None) -> bytes:
            [path] = [p for p in mailbox.iterdir()
                      if b"X-Elemta-Notice: renewal-failed" in p.read_bytes()]
            return path.read_bytes()

        return Mailer(load_config(setup.config_path), _reactor()).send(NOTICE, NOW).addCallback(stored)

    @inlineCallbacks
    def test_maildir_file_is_well_formed(self) -> Generator[Deferred[Any], Any, None]:
        """The stored notice has its headers in the header section and CRLF line ends only."""
        raw = yield self.deliver("normalize")
        assert raw.startswith(b"Received: from mail.example.com ")
        check_raw_message(raw, ["admin@example.com"])

    @inlineCallbacks
    def test_delivered_in_bare_newline_reject_mode(self) -> Generator[Deferred[Any], Any, None]:
        """With bare_newline = "reject" elemta accepts its own notices (no bare CR or LF)."""
        raw = yield self.deliver("reject")
        check_raw_message(raw, ["admin@example.com"])


class Localhost:
    """Connects "localhost" to 127.0.0.1 (the host may resolve it to ::1 first)."""

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30) -> object:
        return _reactor().connectTCP("127.0.0.1", port, factory, timeout=timeout)


class RelayTests(unittest.TestCase):
    """A notice handed to a relay on 127.0.0.1: the DATA bytes it received, STARTTLS, AUTH."""

    def tls_context(self, ca: CA) -> ssl.SSLContext:
        """A server context with a certificate for "localhost" issued by ``ca``."""
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        leaf = make_leaf(ca, ["localhost"])
        cert, key = Path(folder.name) / "leaf.pem", Path(folder.name) / "leaf.key"
        cert.write_bytes(leaf.fullchain_pem)
        key.write_bytes(leaf.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def start(self, **kwargs: Any) -> tuple[Recorder, int]:
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        self.addCleanup(self._collect_server_leaks)
        self.addCleanup(controller.stop)
        return recorder, port

    @staticmethod
    def _collect_server_leaks() -> None:
        """aiosmtpd's STARTTLS leaves its pre-TLS asyncio transport unclosed; collect it here."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    @staticmethod
    def config(relay: str) -> Any:
        return parse_config(f'[server]\nhostname = "mail.example.com"\n'
                            f'[notify]\nrecipients = ["admin@example.com", "ops@example.net"]\n'
                            f'sender = "{SENDER}"\n{relay}')

    @inlineCallbacks
    def test_plain_relay_receives_a_well_formed_message(self) -> Generator[Deferred[Any], Any, None]:
        """Through a plain relay the DATA bytes are the well-formed notice, no bare CR."""
        recorder, port = self.start()
        c = self.config(f'relay = "127.0.0.1:{port}"\nrelay_starttls = false\n')
        yield Mailer(c, _reactor()).send(NOTICE, NOW)
        [envelope] = recorder.envelopes  # one message, addressed to every recipient
        assert envelope.mail_from == SENDER
        assert envelope.rcpt_tos == ["admin@example.com", "ops@example.net"]
        check_raw_message(envelope.original_content, ["admin@example.com", "ops@example.net"])

    @inlineCallbacks
    def test_starttls_relay_with_auth_receives_a_well_formed_message(
            self) -> Generator[Deferred[Any], Any, None]:
        """With relay_starttls and a username the mailer upgrades, verifies the relay against
        the trust root, logs in, and the relay receives the same well-formed bytes."""
        ca = make_ca("notice relay CA")
        logins: list[tuple[bytes, bytes]] = []

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> AuthResult:
            assert isinstance(auth_data, LoginPassword)
            logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=auth_data.password == b"secret")

        recorder, port = self.start(tls_context=self.tls_context(ca), require_starttls=True,
                                    authenticator=authenticator, auth_require_tls=True)
        c = self.config(f'relay = "localhost:{port}"\nrelay_username = "elemta"\n'
                        'relay_password = "secret"\n')
        yield Mailer(c, Localhost(), trust_root=Certificate.loadPEM(ca.pem)).send(NOTICE, NOW)
        assert logins == [(b"elemta", b"secret")]
        [envelope] = recorder.envelopes
        check_raw_message(envelope.original_content, ["admin@example.com", "ops@example.net"])

    @inlineCallbacks
    def test_untrusted_relay_certificate_fails(self) -> Generator[Deferred[Any], Any, None]:
        """A relay whose certificate does not verify gets no mail and the error says so."""
        recorder, port = self.start(tls_context=self.tls_context(make_ca("relay CA")),
                                    require_starttls=True)
        c = self.config(f'relay = "localhost:{port}"\n')
        other = Certificate.loadPEM(make_ca("another CA").pem)
        with pytest.raises(NotifyError, match=f"via localhost:{port} failed"):
            yield Mailer(c, Localhost(), trust_root=other).send(NOTICE, NOW)
        assert recorder.envelopes == []

    @inlineCallbacks
    def test_refused_connection_errbacks_with_reason(self) -> Generator[Deferred[Any], Any, None]:
        """Nothing listening: NotifyError naming the relay, never a silent success."""
        port = free_port()
        c = self.config(f'relay = "127.0.0.1:{port}"\nrelay_starttls = false\n')
        with pytest.raises(NotifyError, match=rf"127\.0\.0\.1:{port} failed: .*refused"):
            yield Mailer(c, _reactor()).send(NOTICE, NOW)

    @inlineCallbacks
    def test_dot_lines_survive_any_chunk_boundary(self) -> Generator[Deferred[Any], Any, None]:
        """A body of 12,000 lines "." (36 KB on the wire) arrives whole, whatever the offset
        of the body: three subjects of different lengths move every line start across the
        sender's 16 KiB chunk boundaries."""
        recorder, port = self.start()
        c = self.config(f'relay = "127.0.0.1:{port}"\nrelay_starttls = false\n')
        notices = [Notice(key=f"dots:{n}", kind="expiry", subject="dots" + "!" * n,
                          body=".\n" * 12_000) for n in range(3)]
        for notice in notices:
            yield Mailer(c, _reactor()).send(notice, NOW)
        for notice, envelope in zip(notices, recorder.envelopes, strict=True):
            msg = message_from_bytes(envelope.original_content, policy=default)
            assert isinstance(msg, EmailMessage)
            assert msg["Subject"] == notice.subject
            assert msg.get_content().replace("\r\n", "\n") == notice.body
