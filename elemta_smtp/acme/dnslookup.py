"""DNS lookups with dnspython, values written the way ``dnsrecords`` compares them.

Blocking and plain (no Twisted): for ``elemta dns records --check`` and the DANE checks
after it. ``resolver(None)`` is the system's (/etc/resolv.conf); ``resolver("host:port")``
asks only that server (tests run their own on 127.0.0.1).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver

from elemta_smtp.schema import dns_server
from elemta_smtp.units import parse_address

TIMEOUT = 3.0


def resolver(server: str | None = None, timeout: float = TIMEOUT) -> dns.resolver.Resolver:
    """A resolver asking ``server`` ("127.0.0.1:5353", "[::1]:53") or, for None, the system's
    name servers. Raises ``ValueError`` with a sentence for a bad ``server``."""
    if server is None:
        found = dns.resolver.Resolver()
    else:
        address = parse_address(dns_server(server))
        found = dns.resolver.Resolver(configure=False)
        found.nameservers = [address.host]
        found.port = address.port
    found.lifetime = timeout
    found.timeout = timeout
    return found


@dataclass(frozen=True)
class Found:
    """What DNS holds for one name and type: values (empty: no such record), or the error
    that kept the answer from us."""

    values: tuple[str, ...] = ()
    error: str | None = None


def _text(rdata: object, rtype: str) -> str:
    data: object = rdata
    if rtype == "MX":
        return f"{data.preference} {data.exchange.to_text().lower()}"  # type: ignore[attr-defined]
    if rtype == "TXT":
        return b"".join(data.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rtype == "TLSA":
        return (f"{data.usage} {data.selector} {data.mtype} "  # type: ignore[attr-defined]
                f"{data.cert.hex()}")  # type: ignore[attr-defined]
    if rtype in ("A", "AAAA"):
        return str(data.address)  # type: ignore[attr-defined]
    return str(data)


#: Resolvers that did not answer at all (a time-out), and how: later look-ups through them
#: (one command's run: each run makes its own resolver) fail at once instead of waiting again.
_SILENT: weakref.WeakKeyDictionary[dns.resolver.Resolver, str] = weakref.WeakKeyDictionary()


def lookup(server: dns.resolver.Resolver, name: str, rtype: str) -> Found:
    """The records of type ``rtype`` for ``name`` (CNAMEs followed). Once the server has not
    answered at all (timed out), the next look-ups through ``server`` fail at once, saying so."""
    silent = _SILENT.get(server)
    if silent is not None:
        return Found(error=f"{silent} (not asked again)")
    try:
        answer = server.resolve(name, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return Found()
    except dns.resolver.NoNameservers as exc:  # e.g. SERVFAIL for this name: ask on
        return Found(error=f"no name server answered ({exc})")
    except dns.exception.Timeout:
        _SILENT[server] = f"no answer within {server.lifetime:g}s"
        return Found(error=_SILENT[server])
    except dns.exception.DNSException as exc:
        return Found(error=str(exc) or type(exc).__name__)
    wanted = dns.rdatatype.from_text(rtype)
    return Found(tuple(_text(r, rtype) for r in answer if r.rdtype == wanted))
