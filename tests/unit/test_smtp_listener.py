"""The listener (listener.py): the connection cap, refused connections, graceful
shutdown, and the narrow interface connections see it through; on StringTransport
and task.Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.listener import SMTPServer
from elemta_smtp.smtp.session import SessionSettings
from tests.fakes import (
    ENVELOPE,
    PEER,
    FakeSink,
    Harness,
    fake_transport,
    take,
)


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_no_stock_twisted_starttls_offer_without_tls(harness: Harness) -> None:
    """Without a TLS creator STARTTLS is neither offered nor accepted, whatever the settings say."""
    server = SMTPServer(SessionSettings(hostname="mx.example.com", starttls_available=True),
                        FakeSink(), None, Clock())
    assert server.settings.starttls_available is False


def test_refused_connection_is_dropped_after_an_idle_period(harness: Harness) -> None:
    """A connection refused at the cap whose 421 cannot be delivered (a TLS port waiting for a
    handshake, a client not reading) is aborted after one idle period: no descriptor leak."""
    harness.connect()
    harness.connect()
    stuck = fake_transport()  # never reports connectionLost by itself
    refused: Any = harness.server.plain_factory().buildProtocol(PEER)
    refused.makeConnection(stuck)
    assert take(stuck) == replies.TOO_MANY_CONNECTIONS
    assert stuck.disconnecting and not stuck.disconnected
    harness.clock.advance(60)
    assert stuck.disconnected


def test_connection_cap(harness: Harness) -> None:
    """Beyond max_connections a client gets 421 4.7.0 and is closed; a freed slot is reused."""
    _first, t1 = harness.connect()
    harness.connect()
    _, t3 = harness.connect()
    assert take(t3) == replies.TOO_MANY_CONNECTIONS
    assert not t3.connected
    assert harness.server.active_connections == 2
    t1.loseConnection()
    _, t4 = harness.connect()
    assert take(t4) == replies.greeting("mx.example.com")


def test_shutdown_without_connections() -> None:
    """Shutdown with nothing open is done at once, and later clients get 421 4.3.2."""
    harness = Harness()
    fired: list[object] = []
    harness.server.shutdown(30).addCallback(fired.append)
    assert fired == [None]
    _, transport = harness.connect()
    assert take(transport) == replies.SHUTTING_DOWN


def test_shutdown_drains_message_in_progress() -> None:
    """Idle sessions get 421 at once; one inside DATA finishes, gets its 250, then 421."""
    harness = Harness(auto_commit=False)
    _idle_protocol, idle = harness.connect()
    busy_protocol, busy = harness.connect()
    busy_protocol.dataReceived(ENVELOPE + b"line one\r\n")
    take(idle), take(busy)
    fired: list[object] = []
    harness.server.shutdown(30).addCallback(fired.append)
    assert take(idle) == replies.SHUTTING_DOWN and not idle.connected
    assert busy.connected and fired == []
    busy_protocol.dataReceived(b"line two\r\n.\r\nMAIL FROM:<>\r\n")
    committed = harness.sink.writers[0].committed
    assert committed is not None
    committed.callback(None)
    out = take(busy)
    assert out.startswith(b"250 2.0.0 OK: queued as ") and out.endswith(replies.SHUTTING_DOWN)
    assert replies.SENDER_OK not in out
    assert fired == [None]


def test_shutdown_timeout_drops_the_rest() -> None:
    """After the shutdown timeout unfinished connections are dropped without acknowledgement."""
    harness = Harness(auto_commit=False)
    protocol, transport = harness.connect()
    protocol.dataReceived(ENVELOPE + b"slow...\r\n")
    take(transport)
    fired: list[object] = []
    harness.server.shutdown(30).addCallback(fired.append)
    harness.clock.advance(29)
    assert fired == [] and transport.connected
    harness.clock.advance(1)
    assert fired == [None]
    assert take(transport) == b""
    assert harness.sink.writers[0].aborted


def test_implicit_tls_needs_a_creator(harness: Harness) -> None:
    """Asking for an implicit-TLS listener without TLS is a clear error."""
    with pytest.raises(ValueError, match="TLS connection creator"):
        harness.server.implicit_tls_factory()


def imported_modules(module: str) -> set[str]:
    """Every module ``module``'s source imports, TYPE_CHECKING blocks included."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_connection_does_not_know_the_listener() -> None:
    """protocol.py reaches the listener only through ConnectionHost: it never imports
    listener.py, not even for type checking (no import cycle)."""
    assert "elemta_smtp.smtp.listener" not in imported_modules("elemta_smtp.smtp.protocol")
    assert "elemta_smtp.smtp.protocol" in imported_modules("elemta_smtp.smtp.listener")
