"""What counting costs on the SMTP path, in memory: ``python -m benchmarks.counting``.

The real adapter (protocol.py) and session on an in-memory transport and sink, the same
messages with ``[metrics]`` off (no counts) and on (every counter the daemon updates per
connection and message), alternated in rounds; prints the process CPU time per message
of each and their ratio. No sockets, TLS or disk: only the Python work on the reactor
thread, where counting happens, so the difference is not drowned by I/O and by other
work on the machine. ``./dev bench --servers elemta,elemta-metrics`` measures the whole
daemon.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

from elemta_smtp.metrics import Metrics
from elemta_smtp.smtp.listener import SMTPServer
from tests.fakes import BODY, SETTINGS, Harness

MESSAGE = (b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" + BODY
           + (b"x" * 78 + b"\r\n") * 51 + b".\r\n")  # 4 KiB, as ./dev bench sends
SETTINGS_4K = replace(SETTINGS, max_message_size=1 << 20)


def cpu_per_message(metrics: bool, connections: int, per_connection: int) -> float:
    """Seconds of process CPU per message: each connection says EHLO, sends
    ``per_connection`` messages, QUIT, and is closed."""
    h = Harness(SETTINGS_4K)
    if metrics:
        h.server = SMTPServer(SETTINGS_4K, h.sink, None, h.clock, metrics=Metrics())
    start = time.process_time()
    for _ in range(connections):
        protocol, transport = h.connect()
        protocol.dataReceived(b"EHLO c.example\r\n")
        for _ in range(per_connection):
            protocol.dataReceived(MESSAGE)
        protocol.dataReceived(b"QUIT\r\n")
        protocol.connectionLost()
        transport.clear()
        assert len(h.sink.writers) == per_connection, "a message was refused"
        h.sink.writers.clear()
    return (time.process_time() - start) / (connections * per_connection)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.counting",
                                description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--per-connection", type=int, default=1,
                   help="messages per connection (default 1: a connection per message)")
    args = p.parse_args(argv)
    off: list[float] = []
    on: list[float] = []
    cpu_per_message(True, 50, args.per_connection)  # warm up both paths
    cpu_per_message(False, 50, args.per_connection)
    for round_ in range(args.rounds):
        pair = [(False, off), (True, on)]
        for metrics, out in pair if round_ % 2 == 0 else reversed(pair):
            out.append(cpu_per_message(metrics, args.connections, args.per_connection))
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    print(f"metrics off: {1e6 * min(off):6.1f} us CPU per message (fastest round), "
          f"{1e6 * statistics.median(off):6.1f} (median)")
    print(f"metrics on:  {1e6 * min(on):6.1f} us CPU per message (fastest round), "
          f"{1e6 * statistics.median(on):6.1f} (median)")
    print(f"on - off:    {1e6 * (min(on) - min(off)):6.1f} us (fastest rounds); on / off per round: "
          f"median {statistics.median(ratios):.3f}, {min(ratios):.3f}-{max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
