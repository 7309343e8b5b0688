"""The real ``elemta serve`` on 127.0.0.1, driven by Python's smtplib: STARTTLS,
implicit TLS, byte-exact Maildir delivery, relay refusal, RSET/NOOP/VRFY."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from elemta_smtp.smtp import replies
from tests.support import Daemon, Setup, running_daemon

SENDER = "sender@client.test"

# 8-bit bytes, a 990-byte line (under the 998 limit), a line starting with "." (dot-stuffed on
# the wire), an empty line and a line that is only "..".
MESSAGE = (
    b"From: Sender <sender@client.test>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: byte-exact\r\n"
    b"Message-ID: <byte-exact@client.test>\r\n"
    b"\r\n"
    b"caf\xc3\xa9 \xff\xfe raw 8-bit\r\n"
    + b"L" * 990 + b"\r\n"
    b".starts with a dot\r\n"
    b"..\r\n"
    b"\r\n"
    b"last line\r\n"
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    setup = Setup(tmp_path_factory.mktemp("smtp-real"))
    setup.write()
    with running_daemon(setup) as d:
        yield d


def reply(wire: bytes) -> tuple[int, bytes]:
    """A reply constant as smtplib reports it: (code, text)."""
    return int(wire[:3]), wire[4:].rstrip(b"\r\n")


def tls_context(setup: Setup) -> ssl.SSLContext:
    """Trust exactly the daemon's self-signed bootstrap certificate (no host name: we dial an IP)."""
    context = ssl.create_default_context(cafile=str(setup.cache_dir / "bootstrap.pem"))
    context.check_hostname = False
    return context


def delivered(setup: Setup, user: str) -> list[bytes]:
    folder = setup.maildir_root / "example.com" / user / "new"
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.exists() else []


def split_received(stored: bytes) -> tuple[bytes, bytes]:
    """(the Received header elemta added, the rest) of a stored message."""
    assert stored.startswith(b"Received: "), stored[:80]
    end = 0
    while True:
        end = stored.index(b"\r\n", end) + 2
        if stored[end:end + 1] not in (b" ", b"\t"):
            return stored[:end], stored[end:]


def send(client: smtplib.SMTP, recipients: list[str], message: bytes) -> None:
    client.ehlo("client.test")
    options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") else []
    refused = client.sendmail(SENDER, recipients, message, mail_options=options)
    assert refused == {}


def new_messages(daemon: Daemon, user: str, before: int) -> list[bytes]:
    stored = delivered(daemon.setup, user)
    return stored[before:] if len(stored) > before else []


def test_starttls_delivers_byte_exact(daemon: Daemon) -> None:
    """After STARTTLS on the plain port, a message with 8-bit bytes, a long line and leading dots
    is stored in example.com/alice/new/ byte for byte after the Received header."""
    setup = daemon.setup
    before = len(delivered(setup, "alice"))
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, local_hostname="client.test", timeout=15) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=tls_context(setup))
        assert code == 220
        assert isinstance(client.sock, ssl.SSLSocket)
        send(client, ["alice@example.com"], MESSAGE)
    [stored] = new_messages(daemon, "alice", before)
    received, rest = split_received(stored)
    assert rest == MESSAGE
    assert b"mail.example.com" in received


def test_implicit_tls_delivers_byte_exact(daemon: Daemon) -> None:
    """SMTPS on the TLS port (TLS from the first byte) delivers the same bytes."""
    setup = daemon.setup
    before = len(delivered(setup, "bob"))
    with smtplib.SMTP_SSL("127.0.0.1", setup.smtps_port, local_hostname="client.test",
                          context=tls_context(setup), timeout=15) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        send(client, ["bob@example.com"], MESSAGE)
    [stored] = new_messages(daemon, "bob", before)
    assert split_received(stored)[1] == MESSAGE


def test_two_recipients_share_one_file(daemon: Daemon) -> None:
    """One DATA for two local recipients lands once in each new/, as hard links of one file."""
    setup = daemon.setup
    before = {u: len(delivered(setup, u)) for u in ("carol", "dave")}
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=15) as client:
        send(client, ["carol@example.com", "dave@example.com"], MESSAGE)
    for user in ("carol", "dave"):
        [stored] = new_messages(daemon, user, before[user])
        assert split_received(stored)[1] == MESSAGE
    [carol] = sorted((setup.maildir_root / "example.com" / "carol" / "new").iterdir())
    [dave] = sorted((setup.maildir_root / "example.com" / "dave" / "new").iterdir())
    assert carol.stat().st_ino == dave.stat().st_ino


def test_relay_to_other_domain_is_refused(daemon: Daemon) -> None:
    """RCPT TO a domain that is not local is refused with a 5xx, and nothing is stored for it."""
    setup = daemon.setup
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=15) as client:
        client.ehlo("client.test")
        assert client.mail(SENDER) == reply(replies.SENDER_OK)
        assert client.rcpt("victim@elsewhere.example.org") == reply(replies.RELAY_DENIED)
        assert client.rcpt("alice@example.com") == reply(replies.RECIPIENT_OK)
        assert client.rset() == reply(replies.RESET_OK)
    assert not (setup.maildir_root / "elsewhere.example.org").exists()


def test_rset_noop_vrfy_over_the_wire(daemon: Daemon) -> None:
    """NOOP answers 250; RSET forgets MAIL/RCPT (so DATA gets 503); VRFY confirms no user (252)."""
    setup = daemon.setup
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=15) as client:
        client.ehlo("client.test")
        assert client.noop() == reply(replies.OK)
        assert client.mail(SENDER) == reply(replies.SENDER_OK)
        assert client.rcpt("alice@example.com") == reply(replies.RECIPIENT_OK)
        assert client.rset() == reply(replies.RESET_OK)
        assert client.docmd("DATA") == reply(replies.NEED_MAIL)
        assert client.verify("alice@example.com") == reply(replies.CANNOT_VRFY)
        assert client.noop() == reply(replies.OK)
        assert client.mail(SENDER) == reply(replies.SENDER_OK)  # still usable after RSET


def test_daemon_logs_ready_once(daemon: Daemon) -> None:
    """The daemon under test is the real one: it logged "elemta ready" and is still running."""
    assert daemon.log().count("elemta ready") == 1
    assert daemon.process.poll() is None
    assert Path(daemon.setup.pid_file).read_text().strip() == str(daemon.pid)


def test_storage_failure_answers_451_and_logs_the_path(tmp_path: Path) -> None:
    """When the Maildir cannot be written (here: maildir_root lies under a plain file, which fails
    even for root), DATA gets the transient 451 and the daemon logs the path and the errno."""
    setup = Setup(tmp_path)
    (tmp_path / "not-a-folder").write_text("a file where a folder should be\n")
    setup.write({"delivery": {"maildir_root": str(tmp_path / "not-a-folder" / "mail")}})
    with running_daemon(setup) as daemon:
        with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=15) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail(SENDER, ["alice@example.com"], b"Subject: x\r\n\r\nbody\r\n")
            assert info.value.smtp_code == 451
            assert client.noop() == reply(replies.OK)  # the session goes on; the client may retry
        daemon.wait_for_log("maildir delivery failed")
        [line] = [x for x in daemon.log().splitlines() if "maildir delivery failed" in x]
        assert str(tmp_path / "not-a-folder") in line
        assert "ENOTDIR (Not a directory)" in line
