"""The real daemon's HTTPS listener on 127.0.0.1: TLS-ALPN-01 answers from the cache (the
validation certificate for a pending name, a handshake failure otherwise), elemta's own
certificate and the MTA-STS policy for every other client, hostile clients, and SMTP
working all along."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from elemta_smtp.acme.mtasts import policy_id, policy_text
from elemta_smtp.cache import live
from elemta_smtp.cache.challenges import REQUEST_DEADLINE
from elemta_smtp.cache.tlsalpn import validates
from tests.certs import make_ca, make_leaf
from tests.integration.test_metrics_endpoint import delta, scrape
from tests.support import Daemon, Setup, free_port, running_daemon

HOST = "127.0.0.1"
NO_PROTOCOL = r"NO_APPLICATION_PROTOCOL|no application protocol"
KEY_AUTHZ = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class Listener:
    """A daemon with [mta_sts] enabled serving a hand certificate for mail.example.com and
    mta-sts.example.com, and its HTTPS port."""

    def __init__(self, daemon: Daemon, port: int, root: Path, metrics_port: int) -> None:
        self.daemon = daemon
        self.port = port
        self.root = root  # the CA of the hand certificate
        self.metrics_port = metrics_port

    @property
    def alpn_dir(self) -> Path:
        return self.daemon.setup.cache_dir / "tls-alpn-01"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    base = tmp_path_factory.mktemp("https")
    ca = make_ca()
    leaf = make_leaf(ca, ["mail.example.com", "mta-sts.example.com"])
    (base / "hand.crt").write_bytes(leaf.fullchain_pem)
    (base / "hand.key").write_bytes(leaf.key_pem)
    (base / "root.pem").write_bytes(ca.pem)
    setup = Setup(base / "elemta")
    port, metrics_port = free_port(), free_port()
    setup.write({
        "metrics": {"listen_addr": f"{HOST}:{metrics_port}"},
        "tls": {"cert_file": str(base / "hand.crt"), "key_file": str(base / "hand.key")},
        "tls.letsencrypt": {"https_addr": f"{HOST}:{port}"},
        "mta_sts": {"enabled": True, "mode": "enforce", "max_age": "14d",
                    "mx": ["mail.example.com", "*.mx.example.com"]},
    })
    with running_daemon(setup) as daemon:
        daemon.wait_for_log("listening for HTTPS (TLS-ALPN-01, MTA-STS)")
        yield Listener(daemon, port, base / "root.pem", metrics_port)


def alpn_client(protocols: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(protocols)
    return context


def handshake(port: int, name: str | None,
              protocols: list[str]) -> tuple[x509.Certificate, str | None, bytes]:
    """TLS to the listener: (the certificate presented, the ALPN protocol selected, and for
    acme-tls/1 what the server sent before closing)."""
    with socket.create_connection((HOST, port), timeout=5) as raw, \
            alpn_client(protocols).wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        selected = tls.selected_alpn_protocol()
        received = b""
        try:
            while selected == "acme-tls/1" and (chunk := tls.recv(4096)):
                received += chunk
        except (ssl.SSLEOFError, ConnectionResetError):
            pass
        return x509.load_der_x509_certificate(der), selected, received


def https_get(listener: Listener, path: str, host: str = "mta-sts.example.com",
              method: str = "GET") -> tuple[int, str, bytes]:
    """A verified HTTPS request (the hand certificate's CA, SNI = ``host``)."""
    import http.client

    context = ssl.create_default_context(cafile=str(listener.root))
    conn = http.client.HTTPSConnection(host, listener.port, context=context, timeout=5)
    conn.sock = context.wrap_socket(socket.create_connection((HOST, listener.port), timeout=5),
                                    server_hostname=host)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def smtp_works(setup: Setup) -> bool:
    with smtplib.SMTP(HOST, setup.smtp_port, timeout=5) as client:
        return client.noop()[0] == 250


# --- TLS-ALPN-01 ---------------------------------------------------------------------------

def test_pending_name_gets_the_validation_certificate(listener: Listener) -> None:
    """acme-tls/1 for a name with an answer in <cache>/tls-alpn-01/ gets the RFC 8737
    certificate for it, acme-tls/1 selected, and the connection closed without data."""
    (listener.alpn_dir / "mail.example.com").write_text(KEY_AUTHZ)
    try:
        cert, selected, received = handshake(listener.port, "mail.example.com", ["acme-tls/1"])
    finally:
        (listener.alpn_dir / "mail.example.com").unlink()
    assert selected == "acme-tls/1"
    assert validates(cert, "mail.example.com", KEY_AUTHZ.encode()) is None
    assert received == b""
    listener.daemon.wait_for_log("tls-alpn-01 challenge served for mail.example.com to 127.0.0.1")


def test_challenges_and_policies_served_are_counted(listener: Listener) -> None:
    """One TLS-ALPN-01 answer and one policy fetched add one each to
    elemta_acme_challenges_served{type="tls-alpn-01"} and elemta_mta_sts_policies_served;
    a refused acme-tls/1 handshake counts nothing; each listener is up under its name."""
    before, _ = scrape(listener.metrics_port)
    (listener.alpn_dir / "mail.example.com").write_text(KEY_AUTHZ)
    try:
        assert handshake(listener.port, "mail.example.com", ["acme-tls/1"])[1] == "acme-tls/1"
    finally:
        (listener.alpn_dir / "mail.example.com").unlink()
    with pytest.raises(ssl.SSLError, match=NO_PROTOCOL):
        handshake(listener.port, "mail.example.com", ["acme-tls/1"])
    assert https_get(listener, "/.well-known/mta-sts.txt")[0] == 200
    listener.daemon.wait_for_log("mta-sts policy served")
    after, _ = scrape(listener.metrics_port)
    assert delta(before, after, "elemta_acme_challenges_served_total", type="tls-alpn-01") == 1
    assert delta(before, after, "elemta_mta_sts_policies_served_total") == 1
    up = {dict(labels)["listener"] for (name, labels), value in after.items()
          if name == "elemta_listener_up" and value == 1}
    assert up == {"smtp", "smtps", "http-01", "https", "metrics"}


def test_answer_removed_means_handshake_failure(listener: Listener) -> None:
    """Once the answer file is gone (certbot's cleanup), acme-tls/1 for that name fails."""
    (listener.alpn_dir / "mail.example.com").write_text(KEY_AUTHZ)
    handshake(listener.port, "mail.example.com", ["acme-tls/1"])
    (listener.alpn_dir / "mail.example.com").unlink()
    with pytest.raises(ssl.SSLError, match=NO_PROTOCOL):
        handshake(listener.port, "mail.example.com", ["acme-tls/1"])


@pytest.mark.parametrize("name", ["unknown.example.org", None, "mail.example.com"])
def test_acme_tls_without_pending_challenge_fails_the_handshake(listener: Listener,
                                                                name: str | None) -> None:
    """acme-tls/1 for a name without a pending challenge, or without SNI, gets a handshake
    failure (no certificate at all), logged with the reason; SMTP is unaffected."""
    with pytest.raises(ssl.SSLError, match=NO_PROTOCOL):
        handshake(listener.port, name, ["acme-tls/1"])
    reason = "without a server name" if name is None else f"acme-tls/1 for {name}"
    listener.daemon.wait_for_log(reason)
    assert smtp_works(listener.daemon.setup)


def test_answer_file_that_is_a_symlink_is_not_followed(listener: Listener, tmp_path: Path) -> None:
    """A symlink planted in tls-alpn-01/ is no answer: the handshake fails."""
    target = tmp_path / "secret"
    target.write_text(KEY_AUTHZ)
    link = listener.alpn_dir / "link.example.com"
    link.symlink_to(target)
    try:
        with pytest.raises(ssl.SSLError):
            handshake(listener.port, "link.example.com", ["acme-tls/1"])
    finally:
        link.unlink()


# --- elemta's certificate and the MTA-STS policy --------------------------------------

def test_other_clients_get_elemtas_certificate_for_their_name(listener: Listener) -> None:
    """Without acme-tls/1 the SNI name picks elemta's certificate and HTTP/1.1 is selected."""
    cert, selected, _ = handshake(listener.port, "mta-sts.example.com", ["h2", "http/1.1"])
    assert selected == "http/1.1"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mta-sts.example.com" in names.get_values_for_type(x509.DNSName)


def test_policy_is_served_on_the_policy_host(listener: Listener) -> None:
    """GET /.well-known/mta-sts.txt on mta-sts.example.com answers the configured policy."""
    status, content_type, body = https_get(listener, "/.well-known/mta-sts.txt")
    assert status == 200
    assert content_type == "text/plain"
    expected = policy_text("enforce", ["mail.example.com", "*.mx.example.com"], 14 * 86400)
    assert body.decode() == expected
    assert body == (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                    b"mx: *.mx.example.com\r\nmax_age: 1209600\r\n")
    assert len(policy_id(expected)) == 32
    listener.daemon.wait_for_log("mta-sts policy served for mta-sts.example.com")


@pytest.mark.parametrize(("path", "host", "method", "expected"), [
    ("/", "mta-sts.example.com", "GET", 404),
    ("/.well-known/mta-sts.txt", "mail.example.com", "GET", 404),
    ("/.well-known/acme-challenge/abc", "mta-sts.example.com", "GET", 404),
    ("/.well-known/mta-sts.txt", "mta-sts.example.com", "POST", 405),
])
def test_everything_else_is_not_found(listener: Listener, path: str, host: str, method: str,
                                      expected: int) -> None:
    """Other paths, other hosts: 404; other methods: 405."""
    assert https_get(listener, path, host, method)[0] == expected


# --- hostile clients ---------------------------------------------------------------------

def test_garbage_client_hello_is_closed_and_smtp_goes_on(listener: Listener) -> None:
    """Bytes that are no TLS close the connection; the daemon and SMTP go on."""
    with socket.create_connection((HOST, listener.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"GET / HTTP/1.1\r\n\r\n" * 10)
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in data
    assert listener.daemon.process.poll() is None
    assert smtp_works(listener.daemon.setup)
    assert https_get(listener, "/.well-known/mta-sts.txt")[0] == 200


def test_silent_client_is_dropped_at_the_deadline(listener: Listener) -> None:
    """A client that connects and never sends a ClientHello is closed REQUEST_DEADLINE after
    it connected; meanwhile SMTP and other HTTPS clients are served."""
    with socket.create_connection((HOST, listener.port), timeout=REQUEST_DEADLINE + 5) as sock:
        started = time.monotonic()
        assert smtp_works(listener.daemon.setup)
        assert https_get(listener, "/.well-known/mta-sts.txt")[0] == 200
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(4096) == b""
        closed_after = time.monotonic() - started
    assert REQUEST_DEADLINE - 1 < closed_after < REQUEST_DEADLINE + 3


def test_ecdsa_and_rsa_both_served_on_the_https_port(tmp_path: Path) -> None:
    """key_type = "ecdsa+rsa": on the HTTPS listener, as on the SMTP ports, a client that can
    only verify RSA gets the RSA certificate and an ECDSA-capable one the ECDSA certificate,
    each with a chain that verifies (a real daemon, real TLS)."""
    ca = make_ca()
    ecdsa = make_leaf(ca, ["mail.example.com", "mta-sts.example.com"])
    rsa = make_leaf(ca, ["mail.example.com", "mta-sts.example.com"], key_type="rsa")
    (tmp_path / "root.pem").write_bytes(ca.pem)
    setup = Setup(tmp_path / "elemta")
    port = free_port()
    setup.write({"tls.letsencrypt": {"domain": "mail.example.com", "key_type": "ecdsa+rsa",
                                     "https_addr": f"{HOST}:{port}"},
                 "mta_sts": {"enabled": True, "mx": ["mail.example.com"]}})
    live.write_certificate(setup.cache_dir, "mail.example.com", ecdsa.key_pem, ecdsa.fullchain_pem)
    live.write_certificate(setup.cache_dir, "mail.example.com", rsa.key_pem, rsa.fullchain_pem,
                           "rsa")
    with running_daemon(setup) as daemon:
        daemon.wait_for_log("listening for HTTPS (TLS-ALPN-01, MTA-STS)")
        for cipher, leaf in (("ECDHE-RSA-AES128-GCM-SHA256", rsa),
                             ("ECDHE-ECDSA-AES128-GCM-SHA256", ecdsa)):
            context = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(cipher)
            with socket.create_connection((HOST, port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="mta-sts.example.com") as tls:
                der = tls.getpeercert(binary_form=True)  # verified against the test CA
            assert der is not None
            assert x509.load_der_x509_certificate(der) == leaf.cert
