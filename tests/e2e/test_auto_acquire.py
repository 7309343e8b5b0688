"""End to end: `elemta serve` with an empty cache obtains a certificate from a
real Pebble by running certbot itself, serves it without a restart, mails the
notices, and survives a certbot that hangs."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.pebble import EMAIL, Pebble
from tests.support import Setup, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DOMAIN = "mail.example.com"


def served_certificate(setup: Setup, cafile: Path | None = None) -> x509.Certificate:
    """The certificate the daemon presents after STARTTLS (chain verified when cafile is given)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if cafile is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
        client.ehlo("test.example")
        client.starttls(context=context)
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def write_config(setup: Setup, pebble: Pebble, **renewal: object) -> None:
    setup.write({
        "tls.letsencrypt": {"enabled": True, "email": EMAIL, "directory_url": pebble.directory_url},
        "tls.renewal": {"renewal_timeout": "60s", **renewal},
        "notify": {"recipients": ["postmaster@example.com"]},
        "delivery": {"local_domains": ["example.com"]},
    })


def assert_reloaded_once(setup: Setup, log: str, serial: int) -> None:
    """The daemon loaded the certificate ``serial`` from live/ exactly once, by itself after
    its own certbot ended: the elemta installer in that certbot sent it no SIGHUP."""
    path = setup.cache_dir / "live" / f"{DOMAIN}.pem"
    assert log.count("SIGHUP: reloading certificates") == 0, log
    assert log.count(f"TLS certificate loaded from {path}: serial {serial:x}") == 1, log


def maildir_messages(setup: Setup) -> list[bytes]:
    new = setup.maildir_root / "example.com" / "postmaster" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []




def test_empty_cache_to_served_pebble_certificate(pebble: Pebble, elemta_setup: Setup) -> None:
    """From an empty cache the daemon serves the bootstrap at once, then Pebble's certificate,
    without a restart and loaded once (no SIGHUP from its own certbot); an "issued" notice
    reaches the local mailbox; state.json records it."""
    write_config(elemta_setup, pebble)
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with running_daemon(elemta_setup, env=env) as daemon:
        first = served_certificate(elemta_setup)
        assert first.issuer == first.subject  # bootstrap, self-signed, served at once
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        leaf = served_certificate(elemta_setup, cafile=pebble.root_path)  # verifies the chain
        assert leaf.serial_number != first.serial_number
        assert_reloaded_once(elemta_setup, daemon.log(), leaf.serial_number)
        assert DOMAIN in leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        wait_until(lambda: maildir_messages(elemta_setup), "the issued notice", timeout=30, daemon=daemon)
        assert b"Subject: TLS certificate for mail.example.com issued" in \
            maildir_messages(elemta_setup)[0]
        state = elemta_setup.cache_dir / "state.json"
        assert format(leaf.serial_number, "x") in state.read_text()
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        certbot_dir = elemta_setup.cache_dir / "certbot"
        assert (certbot_dir / "config" / "renewal" / f"{DOMAIN}.conf").exists()
        assert (certbot_dir / "logs").is_dir()


def test_hanging_certbot_is_killed_and_daemon_keeps_serving(tmp_path: Path,
                                                           elemta_setup: Setup) -> None:
    """A certbot that hangs is killed at renewal_timeout with a clear log line; the daemon
    keeps serving (bootstrap) and accepting mail, and retries later."""
    # an ACME "server" that accepts TCP and never answers: certbot hangs on it
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    try:
        elemta_setup.write({
            "tls.letsencrypt": {"enabled": True, "email": EMAIL,
                                "directory_url": f"https://127.0.0.1:{port}/dir"},
            "tls.renewal": {"renewal_timeout": "10s"},
        })
        with running_daemon(elemta_setup) as daemon:
            daemon.wait_for_log("still running after 10s", timeout=60)
            daemon.wait_for_log("could not obtain a certificate", timeout=30)
            assert "retrying in 2 minutes" in daemon.log()
            assert "did not finish within" in daemon.log()
            with socket.create_connection(("127.0.0.1", elemta_setup.smtp_port), timeout=5) as s:
                assert s.recv(100).startswith(b"220")
            assert served_certificate(elemta_setup).serial_number
            assert daemon.process.poll() is None
            children = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == daemon.pid]
            assert children == []  # certbot is gone, not orphaned under the daemon
            # the failure is mailed (locally, to [tls.letsencrypt] email) with certbot's reason
            inbox = elemta_setup.maildir_root / "example.com" / "admin" / "new"
            wait_until(lambda: inbox.is_dir() and any(inbox.iterdir()),
                       "the acquire-failed notice", timeout=30, daemon=daemon)
            [mail] = [p.read_bytes() for p in inbox.iterdir()]
            assert b"Subject: Could not obtain a TLS certificate for mail.example.com" in mail
            assert b"did not finish within" in mail
    finally:
        hole.close()


def _ppid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


if sys.platform != "linux":  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="uses /proc"))
