"""Pure parsers for the value types elemta.toml uses: durations, sizes, addresses;
and spans of time written the way people read them ("15 days", "expired 1 day ago").

Each parser takes a plain value and returns a plain value or raises ``ValueError``
with a sentence that says what is allowed; config.py adds file, key and line.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import date, time, timedelta

# --- values the way the admin wrote them in TOML, for messages ---

_SHOWN = 60


def toml_text(value: object) -> str:
    """``value`` written as TOML: ``"1000"`` for a string, ``1000``, ``true``, ``["a", 1]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import json  # noqa: PLC0415  (messages only: loading a good config stays fast)

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def described(value: object) -> str:
    """``value`` as the admin wrote it: ``the string "1000"``, ``the number 1000``, ``true``,
    ``the list ["a"]``, ``a table {...}``, ``the date 2030-01-01``."""
    text = toml_text(value)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    if isinstance(value, bool):
        return text
    kind = ("string" if isinstance(value, str) else "number" if isinstance(value, (int, float))
            else "list" if isinstance(value, list) else "table" if isinstance(value, dict)
            else "time" if isinstance(value, time) else "date" if isinstance(value, date) else "")
    if kind == "table":
        return f"a table {text}"
    return f"the {kind} {text}" if kind else text


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
        if isinstance(value, (int, float)) and value >= 0:
            hint = f"write {toml_text(f'{value:g}s')} (seconds) in double quotes, or another unit"
        else:
            hint = "write a number and a unit in double quotes"
        raise ValueError(
            f"expected a duration string such as \"90s\", \"5m\", \"12h\" or \"1d\", "
            f"got {described(value)}: {hint}"
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
            f"{toml_text(value)} is not a duration: use a number with a unit "
            "(ms, s, m, h, d), such as \"90s\", \"5m\", \"12h\" or \"1h30m\""
        )
    return total


def parse_size(value: object) -> int:
    """Turn ``"25MB"``, ``"512KiB"`` or a plain integer of bytes into bytes.

    KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024.
    """
    if isinstance(value, bool) or (not isinstance(value, (int, str))):
        hint = ("write a whole number of bytes without a decimal point, or a string such as \"25MB\""
                if isinstance(value, float) else "write a number of bytes, or a string such as \"25MB\"")
        raise ValueError(f"expected a size such as \"25MB\" or a number of bytes, got {described(value)}: "
                         f"{hint}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"{toml_text(value)} is not a size: use bytes or a number with B, KB, MB, GB "
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


def _covers(address: Address) -> tuple[set[int], str | None]:
    """The IP versions a listen address binds and its one IP (None for a wildcard):
    ``""`` and ``::`` (dual stack) bind both, ``0.0.0.0`` every IPv4 address."""
    if not address.host:
        return {4, 6}, None
    ip = ipaddress.ip_address(address.host)
    if ip.is_unspecified:
        return ({4, 6} if ip.version == 6 else {4}), None
    return {ip.version}, str(ip)


def overlaps(a: Address, b: Address) -> bool:
    """Would listening on ``a`` and on ``b`` in one process fail with "address in use"?
    The same port (not 0, any free port) and the same IP, or a wildcard on one side that
    covers the other's IP version."""
    if a.port != b.port or a.port == 0:
        return False
    (versions_a, ip_a), (versions_b, ip_b) = _covers(a), _covers(b)
    if ip_a is None or ip_b is None:
        return bool(versions_a & versions_b)
    return ip_a == ip_b


#: errno values meaning "no IPv6 here": listening on every address then falls back to IPv4.
NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


def bind_hosts(address: Address) -> tuple[str, ...]:
    """The hosts to bind, in order, to listen on ``address``: ``""`` (every address) is the
    IPv6 wildcard (dual stack: IPv4 too), then, only when that fails with one of
    ``NO_IPV6``, the IPv4 wildcard. The daemon's listeners and the certbot plugin's
    HTTP-01 listener bind alike."""
    return ("::", "0.0.0.0") if address.host == "" else (address.host,)


def listen_failure(what: str, address: Address, error: OSError | None) -> str:
    """A failed bind in words an admin can act on: ``cannot listen for {what} on {address}:
    {why}``. The one wording of EADDRINUSE, EACCES and EADDRNOTAVAIL for the daemon's
    listeners and the certbot plugin's HTTP-01 listener; each adds its own fix."""
    code = getattr(error, "errno", None)
    if code == errno.EADDRINUSE:
        why = "the port is already in use by another program (see `ss -ltnp`)"
    elif code == errno.EACCES:
        why = "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE"
    elif code == errno.EADDRNOTAVAIL:
        why = "that IP address is not on this host"
    else:
        why = str(getattr(error, "strerror", None) or error)
    return f"cannot listen for {what} on {address}: {why}"


def parse_address(value: object) -> Address:
    """Parse ``":25"``, ``"127.0.0.1:2525"`` or ``"[::1]:465"``."""
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            hint = f"write {toml_text(f':{value}')} (every interface) or {toml_text(f'127.0.0.1:{value}')}"
        else:
            hint = "write it in double quotes, such as \":25\""
        raise ValueError(f"expected an address string such as \":25\", got {described(value)}: {hint}")
    hint = 'use ":PORT", "IPv4:PORT" or "[IPv6]:PORT", such as ":25", "127.0.0.1:2525" or "[::1]:465"'
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{toml_text(value)} is not an address: {hint}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{toml_text(value)} is not an address: {hint}")
    if host:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{toml_text(value)}: {toml_text(host)} is not an IP address (names are not resolved "
                f"for listeners); {hint}"
            ) from None
        if text.startswith("[") != (ip.version == 6):
            raise ValueError(f"{toml_text(value)} is not an address: {hint}")
        host = str(ip)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{toml_text(value)}: the port must be a number from 0 to 65535; {hint}")
    return Address(host, int(port_text))


# --- spans of time, for logs and reports ---

def format_span(span: timedelta) -> str:
    """``timedelta`` as a short human text: "15 days", "2 days 4 hours", "40 minutes"."""
    seconds = int(span.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60

    def unit(n: int, word: str) -> str:
        return f"{n} {word}" if n == 1 else f"{n} {word}s"

    if days:
        text = unit(days, "day") + (f" {unit(hours, 'hour')}" if hours else "")
    elif hours:
        text = unit(hours, "hour") + (f" {unit(minutes, 'minute')}" if minutes else "")
    elif minutes:
        text = unit(minutes, "minute")
    else:
        text = unit(rest, "second")
    return sign + text


def whole_days(span: timedelta) -> int:
    """Whole days in ``span``, rounded toward zero on both sides: 29 days 23 hours is 29,
    and 1 day 12 hours ago (-1.5 days) is -1, never -2."""
    days = int(abs(span.total_seconds()) // 86400)
    return -days if span < timedelta(0) else days


def time_left(remaining: timedelta) -> str:
    """Time before expiry as an admin reads it: "29 days left", "1 day left", "5 hours left";
    once expired, "expired 1 day ago", "expired 3 hours ago" (never "-2 days left")."""
    if remaining > timedelta(0):
        days = whole_days(remaining)
        if days:
            return f"{days} day{'s' if days != 1 else ''} left"
        return f"{format_span(remaining)} left"
    ago = -remaining
    days = whole_days(ago)
    if days:
        return f"expired {days} day{'s' if days != 1 else ''} ago"
    return f"expired {format_span(ago)} ago"
