"""Certificate reload in the real daemon: replace live/<domain>.pem, SIGHUP, and new
handshakes (implicit TLS and STARTTLS) get the new certificate from the same pid;
bad files keep the old one; many reloads under load lose no handshake."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from elemta_smtp.cache import layout, live
from tests.certs import CA, Leaf, make_ca, make_leaf
from tests.support import Daemon, Setup, client_context, elemta_command, running_daemon

DOMAIN = "mail.example.com"
LOADED = "TLS certificate loaded from"




class SMTPClient:
    """A tiny blocking SMTP client that can switch to TLS."""

    def __init__(self, port: int, implicit_tls: bool = False) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        if implicit_tls:
            self.sock = client_context().wrap_socket(self.sock, server_hostname=DOMAIN)

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\r\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\r\n")
                lines.append(line.decode())
                if line[3:4] != b"-":
                    return int(line[:3]), "\n".join(lines)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed after {lines!r}")
            self.buffer += chunk

    def command(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        code, text = self.command("STARTTLS")
        assert code == 220, text
        self.sock = client_context().wrap_socket(self.sock, server_hostname=DOMAIN)

    @property
    def serial(self) -> int:
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def close(self) -> None:
        self.sock.close()


def implicit_serial(setup: Setup) -> int:
    c = SMTPClient(setup.smtps_port, implicit_tls=True)
    try:
        assert c.reply()[0] == 220
        return c.serial
    finally:
        c.close()


def starttls_serial(setup: Setup) -> int:
    c = SMTPClient(setup.smtp_port)
    try:
        assert c.reply()[0] == 220
        assert c.command("EHLO client.example")[0] == 250
        c.starttls()
        return c.serial
    finally:
        c.close()


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca("elemta Test Intermediate", parent=make_ca())


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.write()
    return s


def install(setup: Setup, leaf: Leaf) -> Path:
    return live.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)


@pytest.fixture
def daemon(setup: Setup, ca: CA) -> Iterator[tuple[Daemon, Leaf]]:
    first = make_leaf(ca, [DOMAIN])
    install(setup, first)
    with running_daemon(setup) as d:
        yield d, first


def test_sighup_serves_new_certificate_on_both_ports(setup: Setup, ca: CA,
                                                     daemon: tuple[Daemon, Leaf]) -> None:
    """After replacing live/<domain>.pem and SIGHUP, the same pid serves the new serial on the
    implicit TLS port and via STARTTLS on a connection opened before the reload; a connection
    already in TLS carries on with the old certificate."""
    d, first = daemon
    assert implicit_serial(setup) == first.serial
    assert starttls_serial(setup) == first.serial
    waiting = SMTPClient(setup.smtp_port)  # opened before the reload, not yet in TLS
    assert waiting.reply()[0] == 220
    assert waiting.command("EHLO client.example")[0] == 250
    in_tls = SMTPClient(setup.smtps_port, implicit_tls=True)
    assert in_tls.reply()[0] == 220
    try:
        second = make_leaf(ca, [DOMAIN])
        install(setup, second)
        d.sighup()
        d.wait_for_log(LOADED, count=2)
        assert format(second.serial, "x") in d.log()
        waiting.starttls()
        assert waiting.serial == second.serial
        assert waiting.command("EHLO client.example")[0] == 250
        assert implicit_serial(setup) == second.serial
        assert in_tls.serial == first.serial
        assert in_tls.command("EHLO client.example")[0] == 250
        assert int(setup.pid_file.read_text()) == d.pid
        assert d.process.poll() is None
    finally:
        waiting.close()
        in_tls.close()


def test_half_written_file_keeps_old_certificate(setup: Setup, daemon: tuple[Daemon, Leaf]) -> None:
    """A truncated live/<domain>.pem is rejected on SIGHUP: one log line names it, the old serial stays."""
    d, first = daemon
    path = layout.certificate_path(setup.cache_dir, DOMAIN)
    path.write_bytes(path.read_bytes()[:-200])
    d.sighup()
    d.wait_for_log("rejected, still serving")
    lines = [line for line in d.log().splitlines() if "rejected" in line]
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert starttls_serial(setup) == first.serial
    assert implicit_serial(setup) == first.serial


@pytest.mark.parametrize(("tail", "reason"), [
    pytest.param(b"\n---", 'the file is cut off: it ends in "---"', id="cut-in-next-begin"),
    pytest.param(b"\n", "chain missing: the certificate (mail.example.com) is issued by "
                        "'elemta Test Intermediate', which is not in the file", id="cut-after-leaf-end"),
])
def test_file_cut_after_the_leaf_keeps_old_certificate(setup: Setup, ca: CA, daemon: tuple[Daemon, Leaf],
                                                       tail: bytes, reason: str) -> None:
    """A new live/<domain>.pem cut right after the leaf's END line (its chain lost) is rejected on
    SIGHUP with the reason, the old serial stays served on both ports, and `elemta cert info`
    exits 1 naming the file and the reason."""
    d, first = daemon
    path = layout.certificate_path(setup.cache_dir, DOMAIN)
    data = make_leaf(ca, [DOMAIN]).combined_pem
    end = data.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    path.write_bytes(data[:end] + tail)
    d.sighup()
    d.wait_for_log("rejected, still serving")
    (line,) = [line for line in d.log().splitlines() if "rejected" in line]
    assert str(path) in line and reason in line
    assert implicit_serial(setup) == first.serial
    assert starttls_serial(setup) == first.serial
    info = subprocess.run(elemta_command("cert", "info", "-c", str(setup.config_path)),
                          capture_output=True, text=True, timeout=60, check=False)
    assert info.returncode == 1, info.stdout + info.stderr
    assert f"PROBLEM: {path} is not served: {reason}" in info.stdout


@pytest.mark.slow
def test_fifty_reloads_under_load_lose_no_handshake(setup: Setup, ca: CA,
                                                    daemon: tuple[Daemon, Leaf]) -> None:
    """50 certificate reloads while clients keep handshaking (implicit TLS and STARTTLS):
    zero failed handshakes, and the final serial is the last one installed."""
    d, _ = daemon
    stop = threading.Event()
    counts = {"ok": 0}
    failures: list[str] = []

    def hammer(kind: str) -> None:
        while not stop.is_set():
            try:
                implicit_serial(setup) if kind == "implicit" else starttls_serial(setup)
                counts["ok"] += 1
            except Exception as exc:
                failures.append(f"{kind}: {exc!r}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("implicit", "starttls")]
    for t in threads:
        t.start()
    leaves = [make_leaf(ca, [DOMAIN]) for _ in range(50)]
    try:
        for number, leaf in enumerate(leaves, start=2):
            install(setup, leaf)
            d.sighup()
            d.wait_for_log(LOADED, count=number)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    assert counts["ok"] >= 50
    assert implicit_serial(setup) == leaves[-1].serial
    assert d.process.poll() is None


def test_cert_info_command_reads_daemon_serial(setup: Setup, daemon: tuple[Daemon, Leaf]) -> None:
    """`elemta cert info --json` lists the served certificate and the running daemon's matching serial."""
    d, first = daemon
    result = subprocess.run([*elemta_command("cert", "info", "--json", "-c", str(setup.config_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    (cert,) = report["certificates"]
    serial = format(first.serial, "x")
    assert cert["details"]["serial"] == serial
    assert cert["probe"]["pid"] == d.pid
    assert cert["probe"]["serial"] == serial
    text = subprocess.run([*elemta_command("cert", "info", "-c", str(setup.config_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "same as this file" in text.stdout


def test_reload_warns_about_open_keys_and_skipped_files(setup: Setup,
                                                        daemon: tuple[Daemon, Leaf]) -> None:
    """At each reload the daemon warns, one line each, about a live/ key file others can read
    and a live/ file it skips because its name is not a DNS name; it still serves the file."""
    d, first = daemon
    path = layout.certificate_path(setup.cache_dir, DOMAIN)
    path.chmod(0o644)
    (path.parent / "Mail Server.pem").write_bytes(path.read_bytes())
    d.sighup()
    d.wait_for_log("SIGHUP: reloading certificates")
    d.wait_for_log("is skipped:")
    log = d.log()
    assert f"TLS certificate file: {path} holds a private key and its group and others can " \
           f"read it (mode 0644): chmod 600 {path}" in log
    assert f"TLS certificate file: {path.parent / 'Mail Server.pem'} is skipped: " in log
    assert implicit_serial(setup) == first.serial
