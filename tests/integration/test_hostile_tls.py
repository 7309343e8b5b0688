"""Hostile TLS clients against the real daemon: wrong protocol on each port, handshakes
aborted or stalled, old TLS versions and weak cipher suites, the connection cap under TLS."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest

from elemta_smtp.smtp import replies
from tests.integration.test_hostile import Wire, all_greeted, greeted
from tests.support import Daemon, Setup, client_context, running_daemon, wait_until

IDLE = 2.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """idle_timeout = 2s, max_connections = 5."""
    setup = Setup(tmp_path_factory.mktemp("hostile-tls"))
    setup.write({"server": {"idle_timeout": f"{IDLE:g}s", "max_connections": 5}})
    with running_daemon(setup) as d:
        yield d


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello, as Python's ssl module would send it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def handshake(port: int, context: ssl.SSLContext, starttls: bool) -> ssl.SSLSocket:
    """A TLS socket to the daemon: implicit TLS, or STARTTLS on the plain port."""
    wire = Wire(port, timeout=5)
    try:
        if starttls:
            assert wire.reply().startswith(b"220 ")
            assert wire.command(b"EHLO client.test").startswith(b"250-")
            assert wire.command(b"STARTTLS") == replies.READY_FOR_TLS
        return context.wrap_socket(wire.sock)
    except BaseException:
        wire.close()
        raise


def tls_port(daemon: Daemon, starttls: bool) -> int:
    return daemon.setup.smtp_port if starttls else daemon.setup.smtps_port


PORTS = {"implicit": False, "starttls": True}


# --- the wrong protocol on a port ---------------------------------------------------------

def test_client_hello_on_the_plain_port_is_never_accepted(daemon: Daemon) -> None:
    """A TLS ClientHello sent to the plain port (a client configured for port 465) gets only
    5xx/421 replies and is closed by idle_timeout at the latest; other clients are served."""
    with Wire(daemon.setup.smtp_port) as wire:
        assert wire.reply().startswith(b"220 ")
        wire.send(client_hello())
        rest = wire.wait_closed(timeout=IDLE + 2)
    lines = rest.splitlines()
    assert lines and all(line[:1] in (b"5", b"4") for line in lines), rest
    assert not any(line.startswith(b"2") for line in lines)
    with greeted(daemon.setup.smtp_port) as other:
        assert other.command(b"NOOP") == replies.OK


def test_plaintext_smtp_on_the_implicit_tls_port_is_dropped_at_once(daemon: Daemon) -> None:
    """"EHLO" sent in the clear to the implicit-TLS port ends the connection at once, with no
    plaintext reply, and the failed handshake is logged."""
    with Wire(daemon.setup.smtps_port) as wire:
        started = time.monotonic()
        wire.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n")
        assert wire.wait_closed(timeout=IDLE) == b""
        assert time.monotonic() - started < 1
    daemon.wait_for_log("wrong version number")


def test_starttls_followed_by_plaintext_breaks_only_that_handshake(daemon: Daemon) -> None:
    """Plaintext where the ClientHello should be after STARTTLS: the connection is closed
    without executing it, and the daemon goes on serving."""
    with greeted(daemon.setup.smtp_port) as wire:
        assert wire.command(b"STARTTLS") == replies.READY_FOR_TLS
        wire.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.com>\r\n")
        assert wire.wait_closed(timeout=IDLE) == b""
    assert all_greeted(daemon.setup.smtp_port, 1)


# --- handshakes aborted or stalled ------------------------------------------------------------

def test_aborted_handshakes_do_not_leak_connection_slots(daemon: Daemon) -> None:
    """Twenty handshakes cut off midway (half a ClientHello, then close; and a reset after
    STARTTLS) leave all max_connections = 5 slots free for real clients."""
    hello = client_hello()
    for _ in range(10):
        with Wire(daemon.setup.smtps_port) as wire:
            wire.send(hello[: len(hello) // 2])
        with greeted(daemon.setup.smtp_port) as wire:
            assert wire.command(b"STARTTLS") == replies.READY_FOR_TLS
            wire.send(hello[:40])
            wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    wait_until(lambda: all_greeted(daemon.setup.smtp_port, 5), "five slots free after aborts")


def test_stalled_handshakes_are_closed_within_two_idle_timeouts(daemon: Daemon) -> None:
    """A handshake that stops after part of the ClientHello (implicit TLS) and a STARTTLS
    never followed by a ClientHello are both closed within 2 x idle_timeout: a stalled TLS
    client cannot hold a connection slot for ever."""
    hello = client_hello()
    implicit = Wire(daemon.setup.smtps_port)
    starttls = greeted(daemon.setup.smtp_port)
    try:
        started = time.monotonic()
        implicit.send(hello[:40])
        assert starttls.command(b"STARTTLS") == replies.READY_FOR_TLS
        implicit.wait_closed(timeout=2 * IDLE + 1.5)
        starttls.wait_closed(timeout=2 * IDLE + 1.5 - (time.monotonic() - started))
    finally:
        implicit.close()
        starttls.close()


# --- protocol versions and cipher suites --------------------------------------------------------

def legacy_context(version: str) -> ssl.SSLContext:
    """A client that offers only TLS 1.0 or 1.1 (security level 0 so OpenSSL lets it)."""
    context = client_context()
    legacy = getattr(ssl.TLSVersion, version)
    context.minimum_version = context.maximum_version = legacy
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("starttls", PORTS.values(), ids=PORTS.keys())
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_before_1_2_is_refused(daemon: Daemon, version: str, starttls: bool) -> None:
    """A TLS 1.0 / 1.1 client gets a protocol_version alert from the server, on both ports."""
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        handshake(tls_port(daemon, starttls), legacy_context(version), starttls).close()


WEAK = {
    "cbc-sha1": "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",
    "static-rsa": "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",
    "3des-rc4-null": "DES-CBC3-SHA:ECDHE-RSA-DES-CBC3-SHA:RC4-SHA:NULL-SHA:eNULL",
    "anonymous": "aNULL",
}


@pytest.mark.parametrize("starttls", PORTS.values(), ids=PORTS.keys())
@pytest.mark.parametrize("ciphers", WEAK.values(), ids=WEAK.keys())
def test_weak_tls12_cipher_suites_are_refused(daemon: Daemon, ciphers: str, starttls: bool) -> None:
    """A TLS 1.2 client offering only CBC/SHA-1, static-RSA, 3DES/RC4/NULL or anonymous
    suites gets a handshake_failure alert from the server."""
    context = client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers + ":@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        handshake(tls_port(daemon, starttls), context, starttls).close()


@pytest.mark.parametrize("starttls", PORTS.values(), ids=PORTS.keys())
def test_modern_tls12_and_tls13_are_accepted(daemon: Daemon, starttls: bool) -> None:
    """The control for the refusals above: TLS 1.2 with ECDHE+AES-GCM and TLS 1.3 both work."""
    tls12 = client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_ciphers("ECDHE+AESGCM")
    with handshake(tls_port(daemon, starttls), tls12, starttls) as sock:
        assert sock.version() == "TLSv1.2"
        cipher = sock.cipher()
        assert cipher is not None and "GCM" in cipher[0]
    with handshake(tls_port(daemon, starttls), client_context(), starttls) as sock:
        assert sock.version() == "TLSv1.3"


# --- the connection cap under TLS ---------------------------------------------------------------

def test_connection_cap_covers_the_implicit_tls_port(daemon: Daemon) -> None:
    """With five plain connections open, an implicit-TLS client is refused too: after the
    handshake it reads 421 4.7.0 Too many connections and the connection is closed."""
    port = daemon.setup.smtp_port
    wait_until(lambda: all_greeted(port, 5), "five slots free")
    held = [Wire(port) for _ in range(5)]
    try:
        for wire in held:
            assert wire.reply().startswith(b"220 ")
        with Wire(daemon.setup.smtps_port) as extra:
            extra.starttls(client_context())
            assert extra.wait_closed() == replies.TOO_MANY_CONNECTIONS
    finally:
        for wire in held:
            wire.close()


def test_refused_silent_implicit_tls_connections_are_closed(daemon: Daemon) -> None:
    """Connections to the implicit-TLS port refused at the cap that never start TLS are closed
    within 2 x idle_timeout, like every other connection (no descriptor leak past the cap)."""
    port = daemon.setup.smtp_port
    wait_until(lambda: all_greeted(port, 5), "five slots free")
    held = [Wire(port) for _ in range(5)]
    silent: list[Wire] = []
    try:
        for wire in held:
            assert wire.reply().startswith(b"220 ")
        refused = daemon.log().count("refused connection")
        silent = [Wire(daemon.setup.smtps_port) for _ in range(10)]
        daemon.wait_for_log("refused connection", count=refused + 10)
        for wire in held:
            wire.close()
        started = time.monotonic()
        for wire in silent:
            wire.wait_closed(timeout=max(0.1, 2 * IDLE + 1 - (time.monotonic() - started)))
    finally:
        for wire in held + silent:
            wire.close()
