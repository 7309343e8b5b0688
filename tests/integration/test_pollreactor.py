"""LeanEPollReactor: events dispatch without a log context, errors still read as Twisted's."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from elemta_smtp.net.pollreactor import LeanEPollReactor


class Fragile(Protocol):
    """Echoes each read in upper case; ``boom`` raises inside dataReceived."""

    def dataReceived(self, data: bytes) -> None:
        if b"boom" in data:
            raise RuntimeError("handler failed on purpose")
        assert self.transport is not None
        self.transport.write(data.upper())

    def logPrefix(self) -> str:
        return "Fragile"


@pytest.fixture
def reactor() -> Iterator[Any]:
    r: Any = LeanEPollReactor()  # type: ignore[no-untyped-call, unused-ignore]
    yield r
    r.removeAll()
    if r.waker is not None:
        r.waker.connectionLost(None)
    r._poller.close()


def spin(reactor: Any, done: Callable[[], bool]) -> None:
    """Run reactor iterations until ``done()`` (bounded; fails the test if never)."""
    for _ in range(200):
        if done():
            return
        reactor.iterate(0.05)
    raise AssertionError("condition not reached")


def client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return b""


def at_eof(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_handler_error_is_logged_and_the_reactor_keeps_serving(reactor: Any) -> None:
    """An exception in dataReceived is logged under the connection's prefix, that connection
    is closed, and other connections are still served."""
    events: list[LogEvent] = []
    observer: Any = events.append
    globalLogPublisher.addObserver(observer)
    port = reactor.listenTCP(0, Factory.forProtocol(Fragile), interface="127.0.0.1")
    try:
        bad, good = client(port.getHost().port), client(port.getHost().port)
        bad.sendall(b"boom")
        spin(reactor, lambda: at_eof(bad))
        good.sendall(b"still here")
        answer = bytearray()

        def answered() -> bool:
            answer.extend(received(good))
            return answer == b"STILL HERE"

        spin(reactor, answered)
        bad.close()
        good.close()
        spin(reactor, lambda: [r for r in reactor.getReaders() if r is not reactor.waker] == [port])
    finally:
        globalLogPublisher.removeObserver(observer)
        stopped = port.stopListening()  # closes the socket on a later turn of this reactor
        spin(reactor, lambda: stopped.called)
    failures = [e for e in events if isinstance(e.get("failure"), Failure)]
    assert len(failures) == 1
    assert failures[0]["failure"].check(RuntimeError)
    assert failures[0]["log_system"].startswith("Fragile,")
