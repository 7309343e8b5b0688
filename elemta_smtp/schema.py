"""The schema of elemta.toml: every key with its parser and default, and the
value parsers. Each parser returns the value or raises ``ValueError`` with a
sentence saying what is allowed; config.py adds the file, key and line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elemta_smtp.units import Address, described, parse_address, parse_duration, parse_size, toml_text

# --- value parsers: each returns the value or raises ValueError(sentence) ---
# Messages name the value the way the admin wrote it in TOML (described) and say what
# to write instead.

Parser = Callable[[object], Any]
_DIGITS = re.compile(r"^\s*[+-]?\d[\d_]*\s*$")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        hint = f"write {value.strip().lower()} without quotes"
    elif isinstance(value, int) and value in (0, 1):
        hint = f"write {'true' if value else 'false'}"
    else:
        hint = "write true or false, without quotes"
    raise ValueError(f"expected true or false, got {described(value)}: {hint}")


def _int(low: int, high: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and _DIGITS.match(value):
                hint = f"write {int(value.replace('_', ''))} without quotes"
            elif isinstance(value, float) and value.is_integer():
                hint = f"write {int(value)}, without a decimal point"
            else:
                hint = "write a whole number (digits only), without quotes"
            raise ValueError(f"expected a whole number from {low} to {high}, got {described(value)}: {hint}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return int(value)

    return parse


def _str(value: object) -> str:
    if not isinstance(value, str):
        if isinstance(value, (list, dict)):
            hint = "write one value in double quotes"
        else:
            hint = f"write it in double quotes: {toml_text(toml_text(value))}"
        raise ValueError(f"expected a string, got {described(value)}: {hint}")
    return str(value)


def _choice(*choices: str) -> Parser:
    def parse(value: object) -> str:
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            hint = ""
            if isinstance(value, str) and value.strip().lower() in choices:
                hint = f": write {toml_text(value.strip().lower())}"
            elif not isinstance(value, str) and toml_text(value) in choices:
                hint = f": write it in double quotes, {toml_text(toml_text(value))}"
            raise ValueError(f"must be one of {allowed}, got {described(value)}{hint}")
        return str(value)

    return parse


def _path(value: object) -> Path:
    text = _str(value)
    if not text:
        raise ValueError("must not be empty: give a path")
    return Path(text)


def _optional_path(value: object) -> Path | None:
    text = _str(value)
    return Path(text) if text else None


def _optional_address(value: object) -> Address | None:
    if value == "":
        return None
    return parse_address(value)


def _duration(low: float, high: float) -> Parser:
    def parse(value: object) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"must be from {low:g}s to {high:g}s, got {toml_text(value)} ({seconds:g}s)")
        return seconds

    return parse


def _size(value: object) -> int:
    size = parse_size(value)
    if size < 1024:
        raise ValueError(f"must be at least 1024 bytes, got {toml_text(value)}")
    return size


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")


def _domain(value: object) -> str:
    text = _str(value).strip().lower().rstrip(".")
    if not DOMAIN.match(text):
        raise ValueError(f"{toml_text(value)} is not a domain name such as \"mail.example.com\"")
    return text


def _optional_domain(value: object) -> str:
    return "" if value == "" else _domain(value)


def _optional_email(value: object) -> str:
    text = _str(value).strip()
    if text and not _EMAIL.match(text):
        raise ValueError(f"{toml_text(value)} is not an email address such as \"postmaster@example.com\"")
    return text


def _list(item: Parser) -> Parser:
    def parse(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            hint = "" if isinstance(value, dict) else f": write [{toml_text(value)}]"
            raise ValueError(f"expected a list such as [\"a\", \"b\"], got {described(value)}{hint}")
        return tuple(item(v) for v in value)

    return parse


def _local_part(value: object) -> str:
    text = _str(value)
    if not _LOCAL_PART.match(text):
        raise ValueError(f"{toml_text(value)} is not a local part (the bit before @) such as \"alice\"")
    return text.lower()


#: RFC 8461 section 3.2: max_age is at most 31557600 seconds (about a year); a day at least,
#: so that a sender's cached policy outlives a short outage of the HTTPS listener.
MTA_STS_MIN_AGE = 86400
MTA_STS_MAX_AGE = 31557600


def _max_age(value: object) -> float:
    seconds = parse_duration(value)
    if not MTA_STS_MIN_AGE <= seconds <= MTA_STS_MAX_AGE:
        raise ValueError(f"must be from \"1d\" to \"365d\" (RFC 8461 allows at most 31557600s), "
                         f"got {toml_text(value)} ({seconds:g}s)")
    return seconds


def _mx_pattern(value: object) -> str:
    """An MTA-STS "mx" pattern (RFC 8461 section 4.1): a host name, or "*." and a domain
    (matching one more label)."""
    text = _str(value).strip().lower().rstrip(".")
    rest = text[2:] if text.startswith("*.") else text
    if not DOMAIN.match(rest):
        raise ValueError(f"{toml_text(value)} is not an MX host name such as \"mail.example.com\" "
                         "(or a pattern such as \"*.example.com\")")
    return text


_RUA = re.compile(r"^(mailto:[^\s@,;!]+@[A-Za-z0-9.-]+|https://[^\s,;!]+)$")


def _tlsrpt_rua(value: object) -> str:
    """TLSRPT's rua (RFC 8460 section 3): "" or comma-separated mailto: / https: URIs."""
    text = _str(value).strip()
    if not text:
        return ""
    uris = [u.strip() for u in text.split(",")]
    for uri in uris:
        if not _RUA.match(uri):
            raise ValueError(f"{toml_text(uri)} is not a TLSRPT report address: write "
                             "\"mailto:tlsrpt@example.com\" or \"https://reports.example.com/tlsrpt\" "
                             "(several separated by commas)")
    return ",".join(uris)
def _redis_url(value: object) -> str:
    text = _str(value).strip()
    if not text:
        return ""
    scheme, sep, rest = text.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
    if not sep or scheme not in ("redis", "rediss") or not host or host.startswith(":"):
        shown = toml_text(mask_password(text))
        raise ValueError(f"{shown} is not a Redis URL: write \"redis://host:6379/0\" (or "
                         "\"rediss://host:6380/0\" for TLS), or \"\" for a single host")
    return text


def mask_password(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``: every log line and error
    shows a Redis URL this way."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def _key_prefix(value: object) -> str:
    text = _str(value)
    if not text or len(text) > 64 or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{toml_text(value)} is not a key prefix: write 1 to 64 printable "
                         "characters without spaces, such as \"elemta:\"")
    return text


def _node_name(value: object) -> str:
    text = _str(value)
    if len(text) > 128 or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{toml_text(value)} is not a node name: write up to 128 printable "
                         "characters without spaces, such as \"mx1\"")
    return text


def _relay(value: object) -> str:
    text = _str(value)
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{toml_text(value)}: give the relay as \"host:port\", such as "
                             "\"smtp.example.net:587\"")
    return text


def dns_server(text: str) -> str:
    """``text`` if it is the "IP:port" of a DNS server ([tls.dane] resolver, --resolver);
    else ``ValueError`` saying what to write."""
    hint = ("write the DNS server's IP address and port, such as \"127.0.0.1:53\" or "
            "\"[::1]:53\"")
    try:
        address = parse_address(text)
    except ValueError:
        raise ValueError(f"{toml_text(text)} is not a DNS server address: {hint}") from None
    if not address.host or not address.port:
        raise ValueError(f"{toml_text(text)} is not a DNS server address: {hint}")
    return text


def _resolver(value: object) -> str:
    """[tls.dane] resolver: "" (the system's resolvers) or the "host:port" of a DNS server."""
    text = _str(value).strip()
    if not text:
        return ""
    try:
        return dns_server(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (\"\" asks the system's resolvers)") from None


# --- the schema: section -> key -> (parser, default as it would be written in TOML) ---

SCHEMA: dict[str, dict[str, tuple[Parser, object]]] = {
    "server": {
        "hostname": (_optional_domain, ""),
        "listen_addr": (_optional_address, ":25"),
        "pid_file": (_path, "/run/elemta/elemta.pid"),
        "max_connections": (_int(1, 1_000_000), 1000),
        "idle_timeout": (_duration(1, 86400), "5m"),
        "max_message_size": (_size, "25MB"),
        "max_recipients": (_int(1, 100_000), 100),
        "max_errors": (_int(1, 10_000), 20),
        "shutdown_timeout": (_duration(0, 3600), "30s"),
    },
    "delivery": {
        "local_domains": (_list(_domain), []),
        "local_users": (_list(_local_part), []),
        "maildir_root": (_path, "/var/mail/elemta"),
        "bare_newline": (_choice("normalize", "reject"), "normalize"),
    },
    "tls": {
        "enabled": (_bool, True),
        "listen_addr": (_optional_address, ":465"),
        "enable_starttls": (_bool, True),
        "cert_file": (_optional_path, ""),
        "key_file": (_optional_path, ""),
    },
    "tls.letsencrypt": {
        "enabled": (_bool, False),
        "domain": (_optional_domain, ""),
        "email": (_optional_email, ""),
        "cache_dir": (_path, "/var/lib/elemta"),
        "staging": (_bool, False),
        "directory_url": (_str, ""),
        "http_addr": (_optional_address, ":80"),
        "key_type": (_choice("ecdsa", "rsa", "ecdsa+rsa"), "ecdsa"),
        "https_addr": (_optional_address, ":443"),
        "challenge": (_choice("http-01", "tls-alpn-01"), "http-01"),
        "extra_names": (_list(_domain), []),
    },
    "tls.renewal": {
        "auto_renew": (_bool, True),
        "renewal_days": (_int(1, 365), 30),
        "check_interval": (_duration(10, 7 * 86400), "12h"),
        "renewal_timeout": (_duration(10, 86400), "5m"),
    },
    "tls.dane": {
        "enabled": (_bool, False),
        "check_dns": (_bool, False),
        "resolver": (_resolver, ""),
    },
    "notify": {
        "recipients": (_list(_optional_email), []),
        "sender": (_optional_email, ""),
        "relay": (_relay, ""),
        "relay_username": (_str, ""),
        "relay_password": (_str, ""),
        "relay_starttls": (_bool, True),
    },
    "metrics": {
        "listen_addr": (_optional_address, ""),
    },
    "mta_sts": {
        "enabled": (_bool, False),
        "mode": (_choice("enforce", "testing", "none"), "testing"),
        "max_age": (_max_age, "7d"),
        "mx": (_list(_mx_pattern), []),
        "policy_domains": (_list(_domain), []),
        "tlsrpt_rua": (_tlsrpt_rua, ""),
    },
    "cluster": {
        "redis_url": (_redis_url, ""),
        "password_file": (_optional_path, ""),
        "key_prefix": (_key_prefix, "elemta:"),
        "node_name": (_node_name, ""),
        "lock_lease": (_duration(5, 3600), "60s"),
        "sync_interval": (_duration(1, 3600), "30s"),
    },
}
SECTIONS = {"server", "delivery", "tls", "notify", "metrics", "mta_sts", "cluster"}
