"""TCP tricks for the SMTP connections: no Nagle, and writes that go to the socket at
once when nothing is queued. Transport machinery, not SMTP."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import ITCPTransport


def set_tcp_nodelay(transport: object) -> bool:
    """Turn Nagle off on the TCP transport under ``transport`` (through TLS
    wrappers): replies then go out at once instead of waiting ~40 ms for the
    client's delayed ACK. Returns whether a TCP transport was found."""
    for _ in range(4):
        if transport is None:
            return False
        if ITCPTransport.providedBy(transport):
            try:
                cast(Any, transport).setTcpNoDelay(True)
            except OSError:
                return False
            except AttributeError:  # a wrapper claiming what it wraps provides
                pass
            else:
                return True
        transport = getattr(transport, "transport", None)
    return False


def _tcp_under(transport: object) -> tcp.Connection | None:
    for _ in range(4):
        if transport is None or isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def write_through(transport: object) -> bool:
    """Make writes to the TCP connection under ``transport`` (through a TLS wrapper)
    go to the socket at once when nothing is queued, as asyncio's transports do.

    Twisted's ``write`` always queues and waits for the next epoll round: two
    epoll_ctl calls and a loop pass per reply. Whenever anything is queued, the
    socket would block, the connection is closing or STARTTLS is on (plain
    text must then go through TLS), the original ``write`` takes the bytes.
    Returns whether a TCP connection was found."""
    conn = _tcp_under(transport)
    if conn is None:
        return False
    queued_write: Any = conn.write
    sock = conn.socket
    state: Any = conn  # Twisted's buffer attributes are not part of its typed API

    def write(data: bytes) -> None:
        if (type(data) is bytes and data and state.connected and not state.disconnecting
                and not state.TLS and not state.dataBuffer and not state._tempDataBuffer):
            try:
                sent = sock.send(data)
            except OSError:  # would block, or an error Twisted's own path will see and report
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        queued_write(data)

    state.write = write
    return True
