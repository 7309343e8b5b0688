"""A real ``openssl s_client`` against the real daemon: TLS 1.2 renegotiation is refused at once
(the no_renegotiation alert is sent, the session does not hang), TLS 1.3 KeyUpdate works, and
only the X25519, P-256 and P-384 key-exchange groups are accepted."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.certs import make_ca, make_leaf
from tests.support import Daemon, Setup, running_daemon

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

WAIT = 5.0  # seconds for any answer; far below idle_timeout, so a hang fails the test


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """idle_timeout = 10 min: a session that hangs is seen as our own wait timing out. An RSA
    certificate, so that in TLS 1.2 the groups a client offers decide only the key exchange
    (with an ECDSA P-256 certificate a TLS 1.2 client must offer P-256 for the signature)."""
    setup = Setup(tmp_path_factory.mktemp("hostile-openssl"))
    leaf = make_leaf(make_ca(), ["mail.example.com"], key_type="rsa")
    cert_file, key_file = setup.root / "rsa-cert.pem", setup.root / "rsa-key.pem"
    cert_file.write_bytes(leaf.fullchain_pem)
    key_file.write_bytes(leaf.key_pem)
    setup.write({"server": {"idle_timeout": "10m"},
                 "tls": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    with running_daemon(setup) as d:
        d.wait_for_log(f"TLS default certificate: {cert_file}")
        yield d


class SClient:
    """``openssl s_client -msg``: lines typed on its stdin, its output collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            ["openssl", "s_client", "-msg", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._out = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        fd = stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            with self._lock:
                self._out += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._out.decode("latin-1")

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def wait_for(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        """Block until ``text`` appears ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not seen within {timeout}s:\n{self.output[-3000:]}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"s_client still running after {timeout}s:\n"
                               f"{self.output[-3000:]}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=WAIT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def connect(daemon: Daemon, starttls: bool, *args: str) -> SClient:
    """An s_client session that finished its handshake (and, on port 465, read the greeting)."""
    setup = daemon.setup
    port = setup.smtp_port if starttls else setup.smtps_port
    extra = ("-starttls", "smtp") if starttls else ()
    client = SClient("-connect", f"127.0.0.1:{port}", *extra, *args)
    try:
        client.wait_for("Verify return code")
        if not starttls:
            client.wait_for("220 mail.example.com")
    except BaseException:
        client.close()
        raise
    return client


PORTS = {"implicit": False, "starttls": True}


@pytest.mark.parametrize("starttls", PORTS.values(), ids=PORTS.keys())
def test_tls12_renegotiation_gets_the_no_renegotiation_alert_at_once(daemon: Daemon,
                                                                     starttls: bool) -> None:
    """`R` in a TLS 1.2 s_client: the server's no_renegotiation alert arrives at once and the
    client ends the session, instead of both waiting until the idle timeout (10 min here)."""
    client = connect(daemon, starttls, "-tls1_2")
    try:
        started = time.monotonic()
        client.type("R")
        client.wait_for("RENEGOTIATING")
        client.wait_exit()
        assert time.monotonic() - started < WAIT
        assert "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation" in client.output
        assert "no renegotiation" in client.output.split("RENEGOTIATING", 1)[1]
    finally:
        client.close()


@pytest.mark.parametrize("starttls", PORTS.values(), ids=PORTS.keys())
def test_tls13_key_update_keeps_the_session_going(daemon: Daemon, starttls: bool) -> None:
    """`K` (KeyUpdate asking ours too) and `k` in a TLS 1.3 s_client: the session goes on, NOOP
    gets 250 after each, and the server answered the requested update with its own KeyUpdate."""
    client = connect(daemon, starttls, "-tls1_3")
    try:
        ok = client.output.count("250 2.0.0 OK")
        client.type("K")
        client.wait_for("KEYUPDATE")
        client.type("NOOP")
        client.wait_for("250 2.0.0 OK", count=ok + 1)
        assert "<<< TLS 1.3, Handshake [length 0005], KeyUpdate" in client.output
        client.type("k")
        client.wait_for("KEYUPDATE", count=2)
        client.type("NOOP")
        client.wait_for("250 2.0.0 OK", count=ok + 2)
        assert client.process.poll() is None
    finally:
        client.close()


def handshake_with_groups(daemon: Daemon, version: str, groups: str) -> tuple[int, str]:
    """s_client offering only ``groups`` with TLS ``version``; its exit status and output."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{daemon.setup.smtps_port}",
         f"-{version}", "-groups", groups], stdin=subprocess.DEVNULL, capture_output=True,
        timeout=WAIT * 2, check=False)
    return result.returncode, (result.stdout + result.stderr).decode("latin-1")


VERSIONS = ["tls1_2", "tls1_3"]
ACCEPTED = {"X25519": "X25519", "P-256": "prime256v1", "P-384": "secp384r1"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("group", ACCEPTED)
def test_x25519_p256_p384_are_accepted(daemon: Daemon, version: str, group: str) -> None:
    """A client offering only X25519, P-256 or P-384 completes the handshake on that group."""
    status, output = handshake_with_groups(daemon, version, group)
    assert status == 0, output
    assert f"Server Temp Key: {'X25519' if group == 'X25519' else 'ECDH, ' + ACCEPTED[group]}" \
        in output


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("group", ["X448", "P-521"])
def test_x448_and_p521_are_refused(daemon: Daemon, version: str, group: str) -> None:
    """A client offering only X448 or P-521 (not in Mozilla's intermediate profile) gets a
    handshake_failure alert: the server offers no other groups."""
    status, output = handshake_with_groups(daemon, version, group)
    assert status != 0
    assert "handshake failure" in output, output
    assert "Server Temp Key" not in output
