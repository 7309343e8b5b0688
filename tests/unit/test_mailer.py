"""Notice mail, the pure parts: composing the message, its SMTP DATA text and choosing
the route. Real sends (to elemta itself and to relays on 127.0.0.1) are in
tests/integration/test_notice_mail.py."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from twisted.python.failure import Failure

from elemta_smtp.acme.mailer import Mailer, NotifyError, choose_route, compose, smtp_data, wrap_body
from elemta_smtp.acme.notices import Notice
from elemta_smtp.config import Config, parse_config

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NOTICE = Notice(key="expiry:0a:7", kind="expiry",
                subject="TLS certificate for mail.example.com expires in 7 days or less",
                body="The certificate expires.\nDo something.\n")


def config(notify: str = "", delivery: str = "", server: str = "") -> Config:
    return parse_config(f'[server]\nhostname = "mail.example.com"\n{server}\n'
                        f'[delivery]\nlocal_domains = ["example.com"]\n{delivery}\n'
                        f'[notify]\nrecipients = ["admin@example.com", "ops@example.net"]\n'
                        f'sender = "elemta@mail.example.com"\n{notify}')


def only_crlf(raw: bytes) -> bool:
    """Every line of ``raw`` ends in CRLF and no line holds a lone CR or LF."""
    lines = raw.split(b"\r\n")
    return lines[-1] == b"" and not any(b"\r" in line or b"\n" in line for line in lines)


def test_compose_headers_and_body() -> None:
    """The message carries From, To, Subject, Date, a stable Message-ID and the body."""
    raw = compose(NOTICE, "elemta@mail.example.com", ["a@example.com", "b@example.com"],
                  "mail.example.com", NOW)
    assert only_crlf(raw)
    assert raw.isascii()
    msg = message_from_bytes(raw, policy=default)
    assert msg.defects == []
    assert msg["From"] == "elemta <elemta@mail.example.com>"
    assert msg["To"] == "a@example.com, b@example.com"
    assert msg["Subject"] == NOTICE.subject
    assert msg["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@mail.example.com>")
    assert msg["Message-ID"] == message_from_bytes(
        compose(NOTICE, "x@y.z", ["a@b.c"], "mail.example.com", NOW), policy=default)["Message-ID"]
    assert msg.get_content().replace("\r\n", "\n") == wrap_body(NOTICE.body)
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg.get_content_charset() == "utf-8"


def test_non_ascii_body_goes_quoted_printable_as_utf_8() -> None:
    """Non-ASCII text (a certbot reason, a subject) stays 7-bit on the wire: quoted-printable
    with charset utf-8 in the body, an RFC 2047 word in the subject; it decodes unchanged."""
    reason = "Zertifikat für straße.example abgelehnt — échec"
    notice = replace(NOTICE, subject="renewal FAILED — échec", body=f"Reason:\n{reason}\n")
    raw = compose(notice, "elemta@mail.example.com", ["a@example.com"], "mail.example.com", NOW)
    assert raw.isascii() and only_crlf(raw)
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Subject"] == notice.subject
    assert msg.get_content().replace("\r\n", "\n") == notice.body


def test_body_line_over_998_is_encoded_not_sent_raw() -> None:
    """A certbot line with no space longer than SMTP allows (998) is quoted-printable
    encoded (no line over 78 on the wire) and decodes back whole."""
    token = "urn:ietf:params:acme:error:" + "x" * 1500
    notice = replace(NOTICE, body=f"Reason:\n{token}\n")
    raw = compose(notice, "elemta@mail.example.com", ["a@example.com"], "mail.example.com", NOW)
    assert max(map(len, raw.split(b"\r\n"))) <= 78
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    assert token in msg.get_content().replace("\r\n", "\n").split("\n")


def test_bare_cr_and_lf_in_the_body_become_line_breaks() -> None:
    """A lone CR (certbot's progress output) or LF in a reason is a line break in the mail,
    never a bare CR on the wire."""
    notice = replace(NOTICE, body="progress 10%\rprogress 100%\r\ndone\n")
    raw = compose(notice, "elemta@mail.example.com", ["a@example.com"], "mail.example.com", NOW)
    assert only_crlf(raw)
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content().replace("\r\n", "\n") == "progress 10%\nprogress 100%\ndone\n"


@pytest.mark.parametrize(("message", "data"), [
    pytest.param(b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n", id="crlf-unchanged"),
    pytest.param(b"A: b\n\nbody", b"A: b\r\n\r\nbody\r\n", id="lf-and-no-final-newline"),
    pytest.param(b"A: b\r\rbody\r\r\n", b"A: b\r\n\r\nbody\r\n\r\n", id="lone-cr"),
    pytest.param(b"A: b\r\n\r\n.\r\n.x\r\n..\r\nx.\r\n", b"A: b\r\n\r\n..\r\n..x\r\n...\r\nx.\r\n",
                 id="dot-stuffing"),
    pytest.param(b".first\r\n", b"..first\r\n", id="dot-on-the-first-line"),
    pytest.param(b"x\r\nFrom me\r\n", b"x\r\nFrom me\r\n", id="from-line-unchanged"),
])
def test_smtp_data(message: bytes, data: bytes) -> None:
    """The DATA text has CRLF line ends only, every leading dot doubled, a final CRLF."""
    assert smtp_data(message) == data


def test_smtp_data_of_a_composed_notice_is_the_notice() -> None:
    """A composed notice (already CRLF) goes on the wire byte for byte (no CR CR LF)."""
    raw = compose(NOTICE, "elemta@mail.example.com", ["a@example.com"], "mail.example.com", NOW)
    assert smtp_data(raw) == raw


def test_long_body_lines_are_folded_not_quoted_printable() -> None:
    """Prose lines longer than 76 are folded so the mail is 7-bit text an admin can read raw
    (`less` on the Maildir file) without quoted-printable escapes; words stay whole."""
    prose = ("elemta renews it automatically ([tls.renewal] auto_renew = true) but has not "
             "succeeded yet. Run `elemta cert test` to diagnose.")
    notice = replace(NOTICE, body=f"{prose}\nshort line\n")
    raw = compose(notice, "elemta@mail.example.com", ["a@example.com"], "mail.example.com", NOW)
    assert b"quoted-printable" not in raw
    assert b"auto_renew = true" in raw
    body = message_from_bytes(raw, policy=default).get_content().replace("\r\n", "\n")
    assert all(len(line) <= 76 for line in body.split("\n"))
    assert " ".join(body.split()) == " ".join(notice.body.split())


@pytest.mark.parametrize(("server", "host"), [
    pytest.param('listen_addr = ":2525"', "127.0.0.1", id="all-interfaces"),
    pytest.param('listen_addr = "0.0.0.0:2525"', "127.0.0.1", id="ipv4-any"),
    pytest.param('listen_addr = "[::]:2525"', "::1", id="ipv6-any"),
    pytest.param('listen_addr = "127.0.0.5:2525"', "127.0.0.5", id="specific"),
])
def test_local_route_is_own_plain_listener(server: str, host: str) -> None:
    """Without a relay, local recipients are handed to this daemon's plain SMTP listener."""
    c = parse_config(f'[server]\n{server}\n[delivery]\nlocal_domains = ["example.com"]\n')
    route = choose_route(c, ["admin@example.com"])
    assert (route.host, route.port, route.starttls) == (host, 2525, False)


def test_remote_recipient_without_relay_is_an_error() -> None:
    """A recipient outside local_domains with no relay set fails with advice to set a relay."""
    with pytest.raises(NotifyError, match=r"ops@example.net.*\[notify\] relay"):
        choose_route(config(), ["admin@example.com", "ops@example.net"])


def test_relay_route() -> None:
    """relay = "host:port" with STARTTLS and AUTH settings is used as given."""
    route = choose_route(config('relay = "smtp.example.net:587"\nrelay_username = "u"\n'
                                'relay_password = "p"\n'), ["ops@example.net"])
    assert (route.host, route.port, route.starttls, route.username, route.password,
            route.tls_hostname) == ("smtp.example.net", 587, True, "u", "p", "smtp.example.net")


class NoConnect:
    """A reactor that must not be asked to connect."""

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30) -> object:
        raise AssertionError(f"connectTCP({host!r}, {port}) called")


def test_no_recipients() -> None:
    """No recipients at all is an error that says so, and nothing is connected to."""
    c = parse_config('[notify]\nrelay = "127.0.0.1:25"\n')
    failures: list[Failure] = []
    Mailer(c, NoConnect()).send(NOTICE, NOW).addErrback(failures.append)
    [failure] = failures
    assert isinstance(failure.value, NotifyError)
    assert "nobody to mail" in failure.value.reason
