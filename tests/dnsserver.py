"""A small authoritative DNS server for tests (dnslib), serving a zone-file text on a free
127.0.0.1 UDP port: for the record mixes (MX, TXT, TLSA, CNAME) pebble-challtestsrv does
not answer.

    with running_dns("example.com. 60 IN MX 10 mail.example.com.\\n") as port:
        ... --resolver 127.0.0.1:{port}
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.support import free_port


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from a list of records: the records of the asked name and type, a CNAME of the
    name (followed within the zone), NXDOMAIN for a name the zone does not hold."""

    def __init__(self, zone: str) -> None:
        self.records: list[Any] = RR.fromZone(zone)

    def set_zone(self, zone: str) -> None:
        """Serve ``zone`` from now on (a test changing its DNS records)."""
        self.records = RR.fromZone(zone)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name, qtype = request.q.qname, request.q.qtype
        for _ in range(8):  # CNAME chain within the zone
            same_name = [r for r in self.records if r.rname == name]
            answers = [r for r in same_name if r.rtype == qtype]
            cname = [r for r in same_name if r.rtype == QTYPE.CNAME]
            if answers or not cname:
                for record in answers:
                    reply.add_answer(record)
                if not same_name and not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            reply.add_answer(cname[0])
            name = cname[0].rdata.label
        return reply


@contextmanager
def running_dns(zone: str) -> Iterator[int]:
    """Serve ``zone`` on 127.0.0.1 (UDP) until the block ends; yields the port."""
    with running_dns_server(ZoneResolver(zone)) as port:
        yield port


@contextmanager
def running_dns_server(resolver: ZoneResolver) -> Iterator[int]:
    """Serve ``resolver``'s records (which the test may change) on 127.0.0.1 (UDP) until the
    block ends; yields the port."""
    port = free_port(kind=socket.SOCK_DGRAM)
    server = DNSServer(resolver, port=port, address="127.0.0.1",
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    server.start_thread()
    try:
        yield port
    finally:
        server.stop()
        server.server.server_close()
