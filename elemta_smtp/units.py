"""Pure parsers for the value types elemta.toml uses: durations, sizes, addresses.

Each parser takes a plain value and returns a plain value or raises ``ValueError``
with a sentence that says what is allowed; config.py adds file, key and line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Turn ``"24h"``, ``"5m"``, ``"90s"``, ``"1h30m"`` or ``"250ms"`` into seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"expected a duration string such as \"90s\", \"5m\", \"12h\" or \"1d\", got {value!r}"
        )
    text = value.strip().lower()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(
            f"{value!r} is not a duration: use a number with a unit "
            "(ms, s, m, h, d), such as \"90s\", \"5m\", \"12h\" or \"1h30m\""
        )
    return total


def parse_size(value: object) -> int:
    """Turn ``"25MB"``, ``"512KiB"`` or a plain integer of bytes into bytes.

    KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as \"25MB\" or a number of bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as \"25MB\" or a number of bytes, got {value!r}")
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"{value!r} is not a size: use bytes or a number with B, KB, MB, GB "
            "(powers of 1000) or KiB, MiB, GiB (powers of 1024), such as \"25MB\""
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class Address:
    """A listen address: ``host`` is an IP literal, or ``""`` for every interface."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def connect_host(self) -> str:
        """Where a client on this machine reaches this listen address: a wildcard
        ("", 0.0.0.0, ::) through loopback of the same family."""
        if not self.host:
            return "127.0.0.1"
        ip = ipaddress.ip_address(self.host)
        if ip.is_unspecified:
            return "::1" if ip.version == 6 else "127.0.0.1"
        return self.host

    def __str__(self) -> str:
        if self.is_ipv6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(value: object) -> Address:
    """Parse ``":25"``, ``"127.0.0.1:2525"`` or ``"[::1]:465"``."""
    if not isinstance(value, str):
        raise ValueError(f"expected an address string such as \":25\", got {value!r}")
    hint = 'use ":PORT", "IPv4:PORT" or "[IPv6]:PORT", such as ":25", "127.0.0.1:2525" or "[::1]:465"'
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r} is not an address: {hint}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{value!r} is not an address: {hint}")
    if host:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{value!r}: {host!r} is not an IP address (names are not resolved "
                f"for listeners); {hint}"
            ) from None
        if text.startswith("[") != (ip.version == 6):
            raise ValueError(f"{value!r} is not an address: {hint}")
        host = str(ip)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535; {hint}")
    return Address(host, int(port_text))
