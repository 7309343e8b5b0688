"""The Received: trace header elemta puts at the top of every message (RFC 5321 4.4)."""

from __future__ import annotations

import functools
import ipaddress
from datetime import datetime, timezone
from email.utils import format_datetime


def protocol_name(extended: bool, tls: bool) -> str:
    """The ``with`` keyword (RFC 3848): SMTP, ESMTP or ESMTPS. elemta has no AUTH, so never ...A."""
    if tls:
        return "ESMTPS"
    return "ESMTP" if extended else "SMTP"


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    """RFC 5322 date (UTC) of a whole second: made once per second, not per message."""
    return format_datetime(datetime.fromtimestamp(second, timezone.utc))


@functools.lru_cache(maxsize=1024)
def _address_literal(peer: str) -> str:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    return f"IPv6:{ip}" if ip.version == 6 else str(ip)


def received_header(*, helo: str, peer: str, hostname: str, extended: bool, tls: bool,
                    tls_version: str | None, tls_cipher: str | None, queue_id: str,
                    recipients: tuple[str, ...], now: float) -> bytes:
    """The header as wire bytes, folded over several lines, ending in CRLF."""
    lines = [f"Received: from {helo} ([{_address_literal(peer)}])"]
    if tls and tls_version:
        cipher = f" with cipher {tls_cipher}" if tls_cipher else ""
        lines.append(f"\t(using {tls_version}{cipher})")
    lines.append(f"\tby {hostname} (elemta) with {protocol_name(extended, tls)} id {queue_id}")
    date = _date(int(now))
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
