"""Notice mail: composing, choosing the route, and real sends to an SMTP
server on 127.0.0.1 (aiosmtpd in a thread; the client runs on the real reactor)."""

from __future__ import annotations

import datetime as dt
import gc
import ssl
import tempfile
import warnings
from collections.abc import Generator
from dataclasses import replace
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.ssl import Certificate
from twisted.trial import unittest

from elemta_smtp.acme.notices import Notice
from elemta_smtp.config import Config, parse_config
from elemta_smtp.notify import Mailer, NotifyError, choose_route, compose, wrap_body
from tests.support import free_port

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NOTICE = Notice(key="expiry:0a:7", kind="expiry",
                subject="TLS certificate for mail.example.com expires in 7 days or less",
                body="The certificate expires.\nDo something.\n")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def config(notify: str = "", delivery: str = "", server: str = "") -> Config:
    return parse_config(f'[server]\nhostname = "mail.example.com"\n{server}\n'
                        f'[delivery]\nlocal_domains = ["example.com"]\n{delivery}\n'
                        f'[notify]\nrecipients = ["admin@example.com", "ops@example.net"]\n'
                        f'sender = "elemta@mail.example.com"\n{notify}')


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Certificate]:
    """A CA and a server certificate for 127.0.0.1/localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notify test CA")])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=3)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(key.public_key()).serial_number(1).not_valid_before(start)
          .not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, Certificate.loadPEM(ca.public_bytes(serialization.Encoding.PEM))


def test_compose_headers_and_body() -> None:
    """The message carries From, To, Subject, Date, a stable Message-ID and the body."""
    raw = compose(NOTICE, "elemta@mail.example.com", ["a@example.com", "b@example.com"],
                  "mail.example.com", NOW)
    assert b"\r\n" in raw
    msg = message_from_bytes(raw, policy=default)
    assert msg["To"] == "a@example.com, b@example.com"
    assert msg["Subject"] == NOTICE.subject
    assert msg["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@mail.example.com>")
    assert msg["Message-ID"] == message_from_bytes(
        compose(NOTICE, "x@y.z", ["a@b.c"], "mail.example.com", NOW), policy=default)["Message-ID"]
    assert msg.get_content().replace("\r\n", "\n") == wrap_body(NOTICE.body)


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


class SendTests(unittest.TestCase):
    """Real sends over 127.0.0.1."""

    def tmp(self) -> Path:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        return Path(folder.name)

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
        """aiosmtpd's STARTTLS leaves the server's pre-TLS asyncio transport unclosed; collect
        it here so its ResourceWarning is not blamed on a later test. Client sockets are ours
        and are not excused: they are closed before this runs."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    @inlineCallbacks
    def test_plain_relay(self) -> Generator[Deferred[Any], Any, None]:
        """One notice reaches the relay once, addressed to every recipient."""
        recorder, port = self.start()
        c = config(f'relay = "127.0.0.1:{port}"\nrelay_starttls = false\n')
        yield Mailer(c, _reactor()).send(NOTICE, NOW)
        assert len(recorder.envelopes) == 1
        envelope = recorder.envelopes[0]
        assert envelope.mail_from == "elemta@mail.example.com"
        assert envelope.rcpt_tos == ["admin@example.com", "ops@example.net"]
        assert NOTICE.subject.encode() in envelope.original_content

    @inlineCallbacks
    def test_starttls_and_auth(self) -> Generator[Deferred[Any], Any, None]:
        """With relay_starttls and a username the mailer upgrades, verifies the relay and logs in."""
        context, ca = make_tls(self.tmp())
        logins: list[tuple[bytes, bytes]] = []

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> AuthResult:
            assert isinstance(auth_data, LoginPassword)
            logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=auth_data.password == b"secret")

        recorder, port = self.start(tls_context=context, require_starttls=True,
                                    authenticator=authenticator, auth_require_tls=True)
        c = config(f'relay = "localhost:{port}"\nrelay_username = "elemta"\n'
                   'relay_password = "secret"\n')

        class Localhost:
            """Connects "localhost" to 127.0.0.1 (the host may resolve it to ::1 first)."""

            def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30) -> object:
                return _reactor().connectTCP("127.0.0.1", port, factory, timeout=timeout)

        yield Mailer(c, Localhost(), trust_root=ca).send(NOTICE, NOW)
        assert logins == [(b"elemta", b"secret")]
        assert len(recorder.envelopes) == 1

    @inlineCallbacks
    def test_untrusted_relay_certificate_fails(self) -> Generator[Deferred[Any], Any, None]:
        """A relay whose certificate does not verify gets no mail and the error says so."""
        context, _ca = make_tls(self.tmp())
        _other_context, other_ca = make_tls(self.tmp())
        recorder, port = self.start(tls_context=context, require_starttls=True)
        c = config(f'relay = "127.0.0.1:{port}"\n')
        with pytest.raises(NotifyError, match=f"via 127.0.0.1:{port} failed"):
            yield Mailer(c, _reactor(), trust_root=other_ca).send(NOTICE, NOW)
        assert recorder.envelopes == []

    @inlineCallbacks
    def test_local_delivery_through_own_listener(self) -> Generator[Deferred[Any], Any, None]:
        """With no relay, a local recipient's notice is spoken to the plain listener on 127.0.0.1."""
        recorder, port = self.start()
        c = parse_config(f'[server]\nhostname = "mail.example.com"\nlisten_addr = ":{port}"\n'
                         '[delivery]\nlocal_domains = ["example.com"]\n'
                         '[notify]\nrecipients = ["admin@example.com"]\n')
        yield Mailer(c, _reactor()).send(NOTICE, NOW)
        assert [e.rcpt_tos for e in recorder.envelopes] == [["admin@example.com"]]

    @inlineCallbacks
    def test_refused_connection_errbacks_with_reason(self) -> Generator[Deferred[Any], Any, None]:
        """Nothing listening: NotifyError naming the relay, never a silent success."""
        port = free_port()
        c = config(f'relay = "127.0.0.1:{port}"\nrelay_starttls = false\n')
        with pytest.raises(NotifyError, match=rf"127\.0\.0\.1:{port} failed: .*refused"):
            yield Mailer(c, _reactor()).send(NOTICE, NOW)

    @inlineCallbacks
    def test_no_recipients(self) -> Generator[Deferred[Any], Any, None]:
        """No recipients at all is an error that says so."""
        c = parse_config("[notify]\nrelay = \"127.0.0.1:25\"\n")
        with pytest.raises(NotifyError, match="nobody to mail"):
            yield Mailer(c, _reactor()).send(NOTICE, NOW)
