"""acme/arifetch.py against hostile renewalInfo servers on 127.0.0.1: whatever the server
does, ``fetch`` returns an answer with an error in bounded time, never an exception (an
exception or a stall there stopped every certificate check)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

from elemta_smtp.acme import ari, arifetch

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
Behaviour = Callable[[socket.socket, int], None]


@contextmanager
def http_server(behave: Behaviour) -> Iterator[int]:
    """A raw HTTP server: ``behave(connection, port)`` answers each connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                with suppress(OSError):  # the client gave up: that is the point
                    behave(conn, port)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def answer(conn: socket.socket, body: bytes, extra: str = "") -> None:
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 f"{len(body)}\r\n{extra}Connection: close\r\n\r\n".encode() + body)


def test_a_trickling_server_is_given_up_on_at_the_deadline() -> None:
    """A server sending one byte every 0.3 s (each read within the socket timeout): fetch
    gives up after its overall timeout instead of reading for minutes."""
    def trickle(conn: socket.socket, port: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(200):
            conn.sendall(b" ")
            time.sleep(0.3)

    with http_server(trickle) as port:
        started = time.monotonic()
        got = arifetch.fetch(f"http://127.0.0.1:{port}/dir", "a.b", NOW, timeout=1.0)
        took = time.monotonic() - started
    assert got.window is None and "cannot read the ACME directory" in got.error
    assert took < 5, took


def test_deep_json_and_huge_retry_after_are_answers_not_exceptions() -> None:
    """A directory nested 100,000 deep is an error answer; a renewalInfo with a 40-digit
    Retry-After is read, the next fetch a day away at most."""
    def deep(conn: socket.socket, port: int) -> None:
        answer(conn, b"[" * 100_000)

    with http_server(deep) as port:
        got = arifetch.fetch(f"http://127.0.0.1:{port}/dir", "a.b", NOW, timeout=5)
    assert got.window is None and got.error

    def huge_retry(conn: socket.socket, port: int) -> None:
        # one document serves as the directory and as the renewalInfo
        answer(conn, (b'{"renewalInfo": "http://127.0.0.1:%d/ri", "suggestedWindow": '
                      b'{"start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"}}'
                      % port), extra="Retry-After: " + "9" * 40 + "\r\n")

    with http_server(huge_retry) as port:
        got = arifetch.fetch(f"http://127.0.0.1:{port}/dir", "a.b", NOW, timeout=5)
    assert got.error == "" and got.window is not None
    assert got.next_fetch == NOW + ari.RETRY_MAX
