"""certbot with the ``elemta`` plugin against a real Pebble CA and a real
``elemta serve``: every flow ends with the SAME daemon process serving the new
certificate, checked by TLS clients that verify the chain against Pebble's
root, on the implicit-TLS port and through STARTTLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.conftest import StartPebble
from tests.e2e.pebble import Pebble, running_pebble
from tests.support import Daemon, Setup, free_port, running_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOMAIN = "mail.example.com"


# --- TLS clients ---------------------------------------------------------------------

def _context(root: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    context.check_hostname = True
    return context


def implicit_tls_certificate(port: int, root: Path) -> x509.Certificate:
    """The verified leaf served on the SMTPS port (handshake fails unless the chain checks out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            _context(root).wrap_socket(raw, server_hostname=DOMAIN) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def _reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" ":
            return data


def starttls_certificate(port: int, root: Path) -> x509.Certificate:
    """The verified leaf served after EHLO + STARTTLS on the SMTP port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        assert _reply(raw).startswith(b"220")
        raw.sendall(b"EHLO client.example.org\r\n")
        assert b"STARTTLS" in _reply(raw)
        raw.sendall(b"STARTTLS\r\n")
        assert _reply(raw).startswith(b"220")
        with _context(root).wrap_socket(raw, server_hostname=DOMAIN) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            tls.sendall(b"QUIT\r\n")
            return x509.load_der_x509_certificate(der)


def issued(pebble: Pebble, certbot_dir: Path, name: str = DOMAIN) -> x509.Certificate:
    """The certificate certbot saved for ``name``."""
    return x509.load_pem_x509_certificate((pebble.live(name, certbot_dir) / "cert.pem").read_bytes())


def assert_serves(daemon: Daemon, pid: int, pebble: Pebble, expected: x509.Certificate,
                  timeout: float = 15) -> None:
    """The daemon with the same pid serves ``expected`` on SMTPS and via STARTTLS, verified
    against Pebble's root (waits for the SIGHUP reload to land)."""
    setup = daemon.setup
    deadline = time.monotonic() + timeout
    while True:
        served: list[x509.Certificate] = []
        with contextlib.suppress(ssl.SSLCertVerificationError):  # still the bootstrap cert
            served = [implicit_tls_certificate(setup.smtps_port, pebble.root_path),
                      starttls_certificate(setup.smtp_port, pebble.root_path)]
        if served and all(c.serial_number == expected.serial_number for c in served):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon does not serve serial {expected.serial_number:x} after "
                                 f"{timeout}s (serves {[hex(c.serial_number) for c in served]}):\n"
                                 f"{daemon.log()}")
        time.sleep(0.1)
    assert daemon.process.poll() is None and daemon.pid == pid
    assert setup.pid_file.read_text().strip() == str(pid)


def plugin_args(setup: Setup) -> list[str]:
    return ["--elemta-config", str(setup.config_path), "-d", DOMAIN]


# --- the flows -------------------------------------------------------------------------

def test_certonly_with_elemta_authenticator_and_installer(pebble: Pebble, elemta_setup: Setup,
                                                          tmp_path: Path) -> None:
    """`certbot certonly -a elemta -i elemta`: the daemon answers HTTP-01 and then serves the
    cert; run from outside the daemon, the installer reloads it with one SIGHUP."""
    elemta_setup.write()
    with running_daemon(elemta_setup) as daemon:
        pid = daemon.pid
        pebble.certbot("certonly", "-a", "elemta", "-i", "elemta", *plugin_args(elemta_setup),
                       certbot_dir=tmp_path / "certbot")
        assert_serves(daemon, pid, pebble, issued(pebble, tmp_path / "certbot"))
        assert "http-01 challenge served" in daemon.log()
        assert daemon.log().count("SIGHUP: reloading certificates") == 1, daemon.log()


def test_run_with_elemta_authenticator_and_installer(pebble: Pebble, elemta_setup: Setup,
                                                     tmp_path: Path) -> None:
    """`certbot run -a elemta -i elemta`: deploy_cert + restart put the cert in service."""
    elemta_setup.write()
    with running_daemon(elemta_setup) as daemon:
        pid = daemon.pid
        pebble.certbot("run", "-a", "elemta", "-i", "elemta", *plugin_args(elemta_setup),
                       certbot_dir=tmp_path / "certbot")
        assert_serves(daemon, pid, pebble, issued(pebble, tmp_path / "certbot"))


def test_run_standalone_authenticator_with_elemta_installer(start_pebble: StartPebble,
                                                            elemta_setup: Setup,
                                                            tmp_path: Path) -> None:
    """`certbot run -a standalone --installer elemta`: another authenticator, elemta installs."""
    challenge_port = free_port()  # standalone binds this; the daemon keeps its own HTTP port
    assert challenge_port != elemta_setup.http_port
    pebble = start_pebble(http_port=challenge_port)
    elemta_setup.write()
    with running_daemon(elemta_setup) as daemon:
        pid = daemon.pid
        pebble.certbot("run", "-a", "standalone", "--installer", "elemta",
                       "--http-01-port", str(challenge_port), "--http-01-address", "127.0.0.1",
                       *plugin_args(elemta_setup), certbot_dir=tmp_path / "certbot")
        assert_serves(daemon, pid, pebble, issued(pebble, tmp_path / "certbot"))
        assert "http-01 challenge served" not in daemon.log()


def test_install_existing_certificate(pebble: Pebble, elemta_setup: Setup, tmp_path: Path) -> None:
    """`certbot install --cert-name D -i elemta` installs a certificate obtained earlier."""
    elemta_setup.write()
    certbot_dir = tmp_path / "certbot"
    with running_daemon(elemta_setup) as daemon:
        pid = daemon.pid
        pebble.certbot("certonly", "-a", "elemta", *plugin_args(elemta_setup), certbot_dir=certbot_dir)
        with pytest.raises(ssl.SSLCertVerificationError):
            implicit_tls_certificate(elemta_setup.smtps_port, pebble.root_path)
        pebble.certbot("install", "--cert-name", DOMAIN, "-i", "elemta",
                       "--elemta-config", str(elemta_setup.config_path), certbot_dir=certbot_dir)
        assert_serves(daemon, pid, pebble, issued(pebble, certbot_dir))


def test_renew_force_renewal_reuses_stored_options(pebble: Pebble, elemta_setup: Setup,
                                                   tmp_path: Path) -> None:
    """`certbot renew --force-renewal` reuses --elemta-config from renewal/<name>.conf and
    renew_deploy + restart put the renewed certificate in service."""
    elemta_setup.write()
    certbot_dir = tmp_path / "certbot"
    with running_daemon(elemta_setup) as daemon:
        pid = daemon.pid
        pebble.certbot("certonly", "-a", "elemta", "-i", "elemta", *plugin_args(elemta_setup),
                       certbot_dir=certbot_dir)
        first = issued(pebble, certbot_dir)
        assert_serves(daemon, pid, pebble, first)
        renewal_conf = (pebble.certbot_dirs(certbot_dir)["config"] / "renewal" / f"{DOMAIN}.conf")
        assert f"elemta_config = {elemta_setup.config_path}" in renewal_conf.read_text()
        pebble.certbot("renew", "--force-renewal", certbot_dir=certbot_dir)
        renewed = issued(pebble, certbot_dir)
        assert renewed.serial_number != first.serial_number
        assert_serves(daemon, pid, pebble, renewed)


def test_certonly_without_daemon_serves_challenge_itself(pebble: Pebble, elemta_setup: Setup,
                                                         tmp_path: Path) -> None:
    """With no daemon on http_addr the plugin answers HTTP-01 itself; the daemon started
    afterwards serves the installed certificate."""
    elemta_setup.write()
    pebble.certbot("certonly", "-a", "elemta", "-i", "elemta", *plugin_args(elemta_setup),
                   certbot_dir=tmp_path / "certbot")
    with running_daemon(elemta_setup) as daemon:
        assert_serves(daemon, daemon.pid, pebble, issued(pebble, tmp_path / "certbot"))


def test_harness_stops_everything(tmp_path: Path, elemta_setup: Setup) -> None:
    """running_pebble leaves no listener behind."""
    with running_pebble(tmp_path / "p", http_port=elemta_setup.http_port) as pebble:
        port = int(pebble.directory_url.split(":")[2].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
