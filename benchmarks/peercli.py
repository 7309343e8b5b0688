"""The command line every peer server takes, so the runner starts them alike:
``python -m benchmarks.peer_NAME --plain-port P --tls-port T --maildir D --cert C --key K``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

READY = "peer ready"


@dataclass(frozen=True)
class PeerArgs:
    host: str
    plain_port: int
    tls_port: int
    maildir: Path
    cert: Path
    key: Path
    threads: int


def parse_peer_args(argv: list[str] | None, description: str) -> PeerArgs:
    """Parse a peer's arguments; the port on which it answers STARTTLS is ``--plain-port``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--plain-port", type=int, required=True, help="SMTP port (plain and STARTTLS)")
    parser.add_argument("--tls-port", type=int, required=True, help="SMTPS port (implicit TLS)")
    parser.add_argument("--maildir", type=Path, required=True, help="Maildir to deliver into")
    parser.add_argument("--cert", type=Path, required=True, help="PEM certificate")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads that write (and fsync) messages (default 4)")
    ns = parser.parse_args(argv)
    return PeerArgs(ns.host, ns.plain_port, ns.tls_port, ns.maildir, ns.cert, ns.key, ns.threads)
