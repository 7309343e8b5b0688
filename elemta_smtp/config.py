"""elemta.toml -> a frozen, typed ``Config``.

The schema is one table (``SCHEMA``): every key with its parser and default.
Loading collects *every* problem (unknown key, wrong type, bad value), each
naming the file, the key path and the line, and raises one ``ConfigError``.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from elemta_smtp.errors import ElemtaError
from elemta_smtp.units import Address, parse_address, parse_duration, parse_size

DEFAULT_CONFIG_PATH = Path("/etc/elemta/elemta.toml")
CONFIG_ENV = "ELEMTA_CONFIG"
LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
NOTICE_THRESHOLDS = (30, 14, 7, 3, 1)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    path: str
    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        key = f" [{self.key}]" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(ElemtaError):
    """elemta.toml cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class ServerConfig:
    hostname: str
    listen_addr: Address | None
    pid_file: Path
    max_connections: int
    idle_timeout: float
    max_message_size: int
    max_recipients: int
    max_errors: int
    shutdown_timeout: float


@dataclass(frozen=True)
class DeliveryConfig:
    local_domains: tuple[str, ...]
    local_users: tuple[str, ...]
    maildir_root: Path
    bare_newline: str  # "normalize" | "reject"


@dataclass(frozen=True)
class LetsEncryptConfig:
    enabled: bool
    domain: str
    email: str
    cache_dir: Path
    staging: bool
    directory_url: str
    http_addr: Address | None
    key_type: str  # "ecdsa" | "rsa"

    @property
    def acme_directory(self) -> str:
        """The ACME directory certbot is pointed at."""
        if self.directory_url:
            return self.directory_url
        return LETSENCRYPT_STAGING if self.staging else LETSENCRYPT_PRODUCTION


@dataclass(frozen=True)
class RenewalConfig:
    auto_renew: bool
    renewal_days: int
    check_interval: float
    renewal_timeout: float


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool
    listen_addr: Address | None
    enable_starttls: bool
    cert_file: Path | None
    key_file: Path | None
    letsencrypt: LetsEncryptConfig
    renewal: RenewalConfig


@dataclass(frozen=True)
class NotifyConfig:
    recipients: tuple[str, ...]
    sender: str
    relay: str
    relay_username: str
    relay_password: str
    relay_starttls: bool


@dataclass(frozen=True)
class Config:
    path: Path | None
    server: ServerConfig
    delivery: DeliveryConfig
    tls: TLSConfig
    notify: NotifyConfig


# --- value parsers: each returns the value or raises ValueError(sentence) ---

Parser = Callable[[object], Any]


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(low: int, high: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return int(value)

    return parse


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _choice(*choices: str) -> Parser:
    def parse(value: object) -> str:
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            raise ValueError(f"must be one of {allowed}, got {value!r}")
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
            raise ValueError(f"must be from {low:g}s to {high:g}s, got {value!r} ({seconds:g}s)")
        return seconds

    return parse


def _size(value: object) -> int:
    size = parse_size(value)
    if size < 1024:
        raise ValueError(f"must be at least 1024 bytes, got {value!r}")
    return size


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")


def _domain(value: object) -> str:
    text = _str(value).strip().lower().rstrip(".")
    if not _DOMAIN.match(text):
        raise ValueError(f"{value!r} is not a domain name such as \"mail.example.com\"")
    return text


def _optional_domain(value: object) -> str:
    return "" if value == "" else _domain(value)


def _optional_email(value: object) -> str:
    text = _str(value).strip()
    if text and not _EMAIL.match(text):
        raise ValueError(f"{value!r} is not an email address such as \"postmaster@example.com\"")
    return text


def _list(item: Parser) -> Parser:
    def parse(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list such as [\"a\", \"b\"], got {value!r}")
        return tuple(item(v) for v in value)

    return parse


def _local_part(value: object) -> str:
    text = _str(value)
    if not _LOCAL_PART.match(text):
        raise ValueError(f"{value!r} is not a local part (the bit before @) such as \"alice\"")
    return text.lower()


def _relay(value: object) -> str:
    text = _str(value)
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r}: give the relay as \"host:port\", such as \"smtp.example.net:587\"")
    return text


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
        "key_type": (_choice("ecdsa", "rsa"), "ecdsa"),
    },
    "tls.renewal": {
        "auto_renew": (_bool, True),
        "renewal_days": (_int(1, 365), 30),
        "check_interval": (_duration(60, 7 * 86400), "12h"),
        "renewal_timeout": (_duration(10, 86400), "5m"),
    },
    "notify": {
        "recipients": (_list(_optional_email), []),
        "sender": (_optional_email, ""),
        "relay": (_relay, ""),
        "relay_username": (_str, ""),
        "relay_password": (_str, ""),
        "relay_starttls": (_bool, True),
    },
}
_SECTIONS = {"server", "delivery", "tls", "notify"}


def _line_index(text: str) -> dict[str, int]:
    """Map "section.key" (and "section") to the line it is written on.

    A line scanner, enough for the plain layout elemta.toml uses: table headers
    and ``key = value`` lines.
    """
    index: dict[str, int] = {}
    table = ""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]")
    key = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = re.sub(r"\s+", "", m.group(1))
            index.setdefault(table, number)
        elif m := key.match(line):
            index.setdefault(f"{table}.{m.group(1)}" if table else m.group(1), number)
    return index


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f'; did you mean "{close[0]}"?'
    return "; known keys: " + ", ".join(sorted(choices))


def _flatten(doc: Mapping[str, Any], path: str, lines: dict[str, int],
             problems: list[Problem]) -> dict[str, dict[str, object]]:
    """Split the document into the schema's sections, reporting unknown keys."""
    sections: dict[str, dict[str, object]] = {name: {} for name in SCHEMA}

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for name, value in table.items():
            key_path = f"{prefix}.{name}" if prefix else name
            if key_path in SCHEMA:
                if not isinstance(value, Mapping):
                    problems.append(Problem(path, key_path, lines.get(key_path),
                                            f"must be a table [{key_path}]"))
                    continue
                walk(value, key_path)
            elif prefix in SCHEMA and name in SCHEMA[prefix]:
                sections[prefix][name] = value
            else:
                known = list(SCHEMA[prefix]) + [s.rpartition(".")[2] for s in SCHEMA
                                               if s.startswith(prefix + ".")] if prefix else \
                    sorted(_SECTIONS)
                what = "unknown key" if prefix else "unknown section"
                problems.append(Problem(path, key_path, lines.get(key_path),
                                        f"{what} \"{name}\"{_suggest(name, known)}"))

    walk(doc, "")
    return sections


def _unwrap(value: object) -> object:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def parse_config(text: str, path: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse elemta.toml text into a ``Config`` or raise ``ConfigError``.

    Relative paths in the file are taken relative to ``base_dir`` (the file's folder).
    """
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError([Problem(path, "", exc.line, f"not valid TOML: {exc}")]) from None
    lines = _line_index(text)
    problems: list[Problem] = []
    raw = _flatten(_unwrap(doc), path, lines, problems)  # type: ignore[arg-type]
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, (parse, default) in keys.items():
            given = key in raw[section]
            value = raw[section][key] if given else default
            try:
                values[section][key] = parse(value)
            except ValueError as exc:
                key_path = f"{section}.{key}"
                problems.append(Problem(path, key_path, lines.get(key_path), str(exc)))
                values[section][key] = parse(default)
    config, more = _build(values, path, lines, base_dir)
    problems.extend(more)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line is None, p.line or 0)))
    return config


def _absolute(p: Path | None, base_dir: Path | None) -> Path | None:
    if p is None or base_dir is None or p.is_absolute():
        return p
    return base_dir / p


def _build(v: dict[str, dict[str, Any]], path: str, lines: dict[str, int],
           base_dir: Path | None) -> tuple[Config, list[Problem]]:
    """Cross-key rules and defaults that depend on other keys."""
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(path, key, lines.get(key), message))

    s, d, t = v["server"], v["delivery"], v["tls"]
    le, rn, n = v["tls.letsencrypt"], v["tls.renewal"], v["notify"]
    hostname = s["hostname"] or _default_hostname()
    domain = le["domain"] or hostname
    local_domains = d["local_domains"] or (hostname,)
    if le["enabled"] and not le["email"]:
        problem("tls.letsencrypt.email", "is required when [tls.letsencrypt] enabled = true: "
                "the CA sends expiry warnings there and elemta mails its notices there")
    if le["directory_url"] and not re.match(r"^https?://[^\s/]+", le["directory_url"]):
        problem("tls.letsencrypt.directory_url",
                f"{le['directory_url']!r} is not a URL such as \"https://acme.example/directory\"")
    if (t["cert_file"] is None) != (t["key_file"] is None):
        problem("tls.cert_file" if t["cert_file"] is None else "tls.key_file",
                "set both cert_file and key_file to use a certificate managed by hand, or neither")
    if s["listen_addr"] is None and (t["listen_addr"] is None or not t["enabled"]):
        problem("server.listen_addr", "no listener left: set [server] listen_addr or "
                "[tls] listen_addr with [tls] enabled = true")
    config = Config(
        path=None if path.startswith("<") else Path(path),
        server=ServerConfig(
            hostname=hostname,
            listen_addr=s["listen_addr"],
            pid_file=_absolute(s["pid_file"], base_dir),  # type: ignore[arg-type]
            max_connections=s["max_connections"],
            idle_timeout=s["idle_timeout"],
            max_message_size=s["max_message_size"],
            max_recipients=s["max_recipients"],
            max_errors=s["max_errors"],
            shutdown_timeout=s["shutdown_timeout"],
        ),
        delivery=DeliveryConfig(
            local_domains=tuple(dict.fromkeys(local_domains)),
            local_users=tuple(dict.fromkeys(d["local_users"])),
            maildir_root=_absolute(d["maildir_root"], base_dir),  # type: ignore[arg-type]
            bare_newline=d["bare_newline"],
        ),
        tls=TLSConfig(
            enabled=t["enabled"],
            listen_addr=t["listen_addr"],
            enable_starttls=t["enable_starttls"],
            cert_file=_absolute(t["cert_file"], base_dir),
            key_file=_absolute(t["key_file"], base_dir),
            letsencrypt=LetsEncryptConfig(
                enabled=le["enabled"],
                domain=domain,
                email=le["email"],
                cache_dir=_absolute(le["cache_dir"], base_dir),  # type: ignore[arg-type]
                staging=le["staging"],
                directory_url=le["directory_url"],
                http_addr=le["http_addr"],
                key_type=le["key_type"],
            ),
            renewal=RenewalConfig(**rn),
        ),
        notify=NotifyConfig(
            recipients=tuple(r for r in n["recipients"] if r) or ((le["email"],) if le["email"] else ()),
            sender=n["sender"] or f"elemta@{hostname}",
            relay=n["relay"],
            relay_username=n["relay_username"],
            relay_password=n["relay_password"],
            relay_starttls=n["relay_starttls"],
        ),
    )
    return config, problems


def _default_hostname() -> str:
    name = socket.getfqdn().lower().rstrip(".")
    return name if _DOMAIN.match(name) else "localhost"


def config_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the config comes from: ``-c``, then $ELEMTA_CONFIG, then /etc/elemta/elemta.toml."""
    if cli_path:
        return Path(cli_path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and parse a config file; a missing or unreadable file is a ``ConfigError`` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", None,
                                   "no such file: create it (see packaging/elemta.toml), "
                                   "or pass -c PATH or set ELEMTA_CONFIG")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), "", None, f"cannot read: {exc}")]) from None
    return parse_config(text, str(path), path.resolve().parent)


def dev_config(data_dir: Path) -> Config:
    """The embedded default for ``elemta serve --dev``: unprivileged loopback ports,
    everything under ``data_dir``, a self-signed certificate, no domain, no internet."""
    text = f"""
[server]
hostname = "localhost"
listen_addr = "127.0.0.1:2525"
pid_file = "{data_dir / 'elemta.pid'}"

[delivery]
local_domains = ["localhost", "example.com"]
maildir_root = "{data_dir / 'mail'}"

[tls]
listen_addr = "127.0.0.1:4465"

[tls.letsencrypt]
cache_dir = "{data_dir / 'cache'}"
http_addr = "127.0.0.1:8080"
"""
    return parse_config(text, "<embedded --dev config>")
