"""End to end with TLS-ALPN-01 only: Pebble validates on the daemon's https_addr and its
HTTP-01 port points at nothing, so HTTP-01 cannot succeed. The daemon's own acquisition
(several names: the domain, an extra name and mta-sts.<domain>) and `certbot certonly -a
elemta -i elemta --preferred-challenges tls-alpn-01` each end with the SAME daemon process
serving Pebble's certificate, verified against Pebble's root; SMTP keeps working while
the challenges run."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.conftest import StartPebble
from tests.e2e.pebble import EMAIL, Pebble
from tests.e2e.test_certbot_elemta import DOMAIN, assert_serves, issued
from tests.support import Setup, free_port, running_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES = [DOMAIN, "mx2.example.com", "mta-sts.example.com"]


def pebble_for_tls_alpn(start_pebble: StartPebble, https_port: int) -> Pebble:
    """Pebble validating TLS-ALPN-01 on ``https_port``; its HTTP-01 port has no listener."""
    nothing = free_port()
    return start_pebble(http_port=nothing, tls_port=https_port)


@contextmanager
def smtp_traffic(setup: Setup) -> Iterator[list[str]]:
    """SMTP sessions (EHLO, a message, QUIT) one after another in a thread for the duration;
    yields the list of failures (empty when every session went through)."""
    failures: list[str] = []
    sessions = [0]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
                    client.sendmail("a@example.org", ["postmaster@example.com"],
                                    b"Subject: during the challenge\r\n\r\nhello\r\n")
                sessions[0] += 1
            except (OSError, smtplib.SMTPException) as exc:
                failures.append(repr(exc))
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=30)
    assert sessions[0] > 0


def https_certificate(port: int, name: str, root: Path) -> x509.Certificate:
    """The verified certificate the HTTPS listener presents for ``name`` (normal ALPN)."""
    context = ssl.create_default_context(cafile=str(root))
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def test_daemon_obtains_a_several_name_certificate_with_tls_alpn_only(
        start_pebble: StartPebble, elemta_setup: Setup) -> None:
    """challenge = "tls-alpn-01": the daemon's own certbot answers through the daemon's HTTPS
    listener for every name, the same pid serves the certificate on SMTPS, STARTTLS and 443
    (mta-sts.example.com included), and SMTP works throughout."""
    https_port = free_port()
    pebble = pebble_for_tls_alpn(start_pebble, https_port)
    elemta_setup.write({
        "tls.letsencrypt": {"enabled": True, "email": EMAIL, "directory_url": pebble.directory_url,
                            "challenge": "tls-alpn-01", "https_addr": f"127.0.0.1:{https_port}",
                            "extra_names": ["mx2.example.com"]},
        "tls.renewal": {"renewal_timeout": "60s"},
        "mta_sts": {"enabled": True},
    })
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon, \
            smtp_traffic(elemta_setup) as failures:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=120)
        log = daemon.log()
        for name in NAMES:
            assert f"tls-alpn-01 challenge served for {name}" in log, log
        assert "http-01 challenge served" not in log
        leaf = x509.load_pem_x509_certificate(
            (elemta_setup.cache_dir / "live" / f"{DOMAIN}.pem").read_bytes().split(
                b"-----END PRIVATE KEY-----\n", 1)[1])
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(names.get_values_for_type(x509.DNSName)) == sorted(NAMES)
        assert_serves(daemon, daemon.pid, pebble, leaf)
        served = https_certificate(https_port, "mta-sts.example.com", pebble.root_path)
        assert served.serial_number == leaf.serial_number
        assert list((elemta_setup.cache_dir / "tls-alpn-01").iterdir()) == []  # cleaned up
    assert failures == []


def test_certbot_certonly_with_preferred_tls_alpn(start_pebble: StartPebble, elemta_setup: Setup,
                                                  tmp_path: Path) -> None:
    """`certbot certonly -a elemta -i elemta --preferred-challenges tls-alpn-01` while the
    daemon runs (its HTTPS listener up for MTA-STS): the daemon answers, the installer
    reloads it, the same pid serves the certificate; SMTP works throughout."""
    https_port = free_port()
    pebble = pebble_for_tls_alpn(start_pebble, https_port)
    elemta_setup.write({"tls.letsencrypt": {"https_addr": f"127.0.0.1:{https_port}"},
                        "mta_sts": {"enabled": True}})
    with running_daemon(elemta_setup) as daemon, smtp_traffic(elemta_setup) as failures:
        pid = daemon.pid
        daemon.wait_for_log("listening for HTTPS")
        pebble.certbot("certonly", "-a", "elemta", "-i", "elemta", "--preferred-challenges",
                       "tls-alpn-01", "--elemta-config", str(elemta_setup.config_path),
                       "-d", DOMAIN, certbot_dir=tmp_path / "certbot")
        assert_serves(daemon, pid, pebble, issued(pebble, tmp_path / "certbot"))
        assert f"tls-alpn-01 challenge served for {DOMAIN}" in daemon.log()
    assert failures == []


def test_certbot_answers_tls_alpn_itself_without_daemon(start_pebble: StartPebble,
                                                        elemta_setup: Setup, tmp_path: Path) -> None:
    """With no daemon on https_addr the plugin answers TLS-ALPN-01 from its own listener; the
    daemon started afterwards serves the installed certificate."""
    https_port = free_port()
    pebble = pebble_for_tls_alpn(start_pebble, https_port)
    elemta_setup.write({"tls.letsencrypt": {"https_addr": f"127.0.0.1:{https_port}",
                                            "challenge": "tls-alpn-01"}})
    result = pebble.certbot("certonly", "-a", "elemta", "-i", "elemta",
                            "--elemta-config", str(elemta_setup.config_path), "-d", DOMAIN,
                            certbot_dir=tmp_path / "certbot")
    assert "Installed the certificate" in result.stdout + result.stderr
    with running_daemon(elemta_setup) as daemon:
        assert_serves(daemon, daemon.pid, pebble, issued(pebble, tmp_path / "certbot"))
