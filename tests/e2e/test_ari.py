"""End to end: renewal follows the CA's renewal information (ARI, RFC 9773).

The packaged Pebble (2.4) has no ARI, so this test runs a small renewalInfo server of its
own (HTTPS on 127.0.0.1, with Pebble's API certificate): it serves Pebble's directory with a
``renewalInfo`` URL added, so certbot still talks to Pebble for everything else, and answers
renewalInfo requests as the test says. Everything else is the real daemon, certbot, Pebble.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509

from tests.e2e.pebble import Pebble
from tests.e2e.test_auto_acquire import DOMAIN, served_certificate, write_config
from tests.support import Setup, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ari_id(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # with a sign byte if needed
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return f"{b64(aki.key_identifier)}.{b64(raw)}"


class RenewalInfo:
    """What the in-test server answers: a window per certificate id (default: one a month
    away), and every id asked about."""

    def __init__(self) -> None:
        now = datetime.now(timezone.utc)
        self.default = (now + timedelta(days=30), now + timedelta(days=31))
        self.windows: dict[str, tuple[datetime, datetime]] = {}
        self.asked: list[str] = []


@contextmanager
def renewal_info_server(pebble: Pebble, info: RenewalInfo) -> Iterator[str]:
    """Serve Pebble's directory plus renewalInfo; yields the directory URL."""
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    with urllib.request.urlopen(pebble.directory_url, context=context, timeout=10) as response:
        directory = json.loads(response.read())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/dir":
                body = json.dumps({**directory, "renewalInfo": f"{base}/renewal-info"}).encode()
                headers = {}
            elif self.path.startswith("/renewal-info/"):
                ident = self.path.rsplit("/", 1)[1]
                info.asked.append(ident)
                start, end = info.windows.get(ident, info.default)
                body = json.dumps({"suggestedWindow": {"start": start.isoformat(),
                                                       "end": end.isoformat()}}).encode()
                headers = {"Retry-After": "3600"}
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pebble.workdir / "api-cert.pem", pebble.workdir / "api-key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    base = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{base}/dir"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_renewal_follows_the_ca_window(pebble: Pebble, elemta_setup: Setup) -> None:
    """A certificate whose ARI window has begun (the CA wants it replaced early, long before
    renewal_days) is renewed at the next check, logged as the CA's window; its successor,
    whose window is a month away, is not renewed again."""
    info = RenewalInfo()
    now = datetime.now(timezone.utc)
    info.default = (now - timedelta(hours=2), now - timedelta(hours=1))  # open: renew now
    with renewal_info_server(pebble, info) as directory:
        write_config(elemta_setup, pebble, check_interval="10s")
        text = elemta_setup.config_path.read_text()
        elemta_setup.config_path.write_text(text.replace(pebble.directory_url, directory))
        env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
        with running_daemon(elemta_setup, env=env) as daemon:
            daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
            first = served_certificate(elemta_setup, cafile=pebble.root_path)
            first_id = ari_id(first)
            info.windows[first_id] = info.default  # the first one's window is open
            info.default = (now + timedelta(days=30), now + timedelta(days=31))  # later ones'

            daemon.wait_for_log(f"certificate for {DOMAIN} renewed", timeout=60)
            assert first_id in info.asked
            log = daemon.log()
            assert "the CA's renewal window (ARI)" in log, log
            second = served_certificate(elemta_setup, cafile=pebble.root_path)
            assert second.serial_number != first.serial_number
            second_id = ari_id(second)
            wait_until(lambda: second_id in info.asked, "the successor's renewalInfo asked",
                       timeout=30, daemon=daemon)
            daemon.wait_for_log(f"(serial {format(second.serial_number, 'x')}) between",
                                timeout=30)
            checks = daemon.log().count("certificate check done:")
            daemon.wait_for_log("certificate check done:", count=checks + 2, timeout=40)
            assert daemon.log().count(f"certificate for {DOMAIN} renewed: serial") == 1, daemon.log()
            # Retry-After (an hour) is honoured: the successor is asked about once
            assert info.asked.count(second_id) == 1, info.asked
