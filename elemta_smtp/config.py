"""elemta.toml -> a frozen, typed ``Config``.

The schema is one table (``SCHEMA``): every key with its parser and default.
Loading collects *every* problem (unknown key, wrong type, bad value), each
naming the file, the key path and the line, and raises one ``ConfigError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from elemta_smtp.schema import DOMAIN, SCHEMA, SECTIONS
from elemta_smtp.tomlread import ConfigError, Problem, line_index, read_toml
from elemta_smtp.units import Address, described, overlaps, toml_text

DEFAULT_CONFIG_PATH = Path("/etc/elemta/elemta.toml")
CONFIG_ENV = "ELEMTA_CONFIG"
LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
NOTICE_THRESHOLDS = (30, 14, 7, 3, 1)

__all__ = ["Config", "ConfigError", "Problem", "config_path", "dev_config", "load_config",
           "parse_config"]


# The records below are typing.NamedTuple, not frozen dataclasses: just as immutable and
# typed, but creating a frozen dataclass costs ~0.5 ms at import (generated methods are
# compiled one by one), and every `elemta` command imports these: eight of them were a
# tenth of what `elemta cert info` takes on top of Python and cryptography.

class ServerConfig(NamedTuple):
    hostname: str
    listen_addr: Address | None
    pid_file: Path
    max_connections: int
    idle_timeout: float
    max_message_size: int
    max_recipients: int
    max_errors: int
    shutdown_timeout: float


class DeliveryConfig(NamedTuple):
    local_domains: tuple[str, ...]
    local_users: tuple[str, ...]
    maildir_root: Path
    bare_newline: str  # "normalize" | "reject"


class LetsEncryptConfig(NamedTuple):
    enabled: bool
    domain: str
    email: str
    cache_dir: Path
    staging: bool
    directory_url: str
    http_addr: Address | None
    key_type: str  # "ecdsa" | "rsa" | "ecdsa+rsa" (two certificates, both served)
    https_addr: Address | None
    challenge: str  # "http-01" | "tls-alpn-01"
    extra_names: tuple[str, ...]
    #: every name the certificate must cover, ``domain`` first: then ``extra_names``, then
    #: ``mta-sts.<d>`` for each MTA-STS policy domain when [mta_sts] is enabled
    names: tuple[str, ...]

    @property
    def acme_directory(self) -> str:
        """The ACME directory certbot is pointed at."""
        if self.directory_url:
            return self.directory_url
        return LETSENCRYPT_STAGING if self.staging else LETSENCRYPT_PRODUCTION


    @property
    def key_types(self) -> tuple[str, ...]:
        """The key types of the certificates elemta keeps: ("ecdsa",), ("rsa",) or, for
        "ecdsa+rsa", ("ecdsa", "rsa") (the first is the one in live/<domain>.pem)."""
        return tuple(self.key_type.split("+"))


class DaneConfig(NamedTuple):
    enabled: bool  # keys never change without a staged rollover
    check_dns: bool  # compare the published TLSA records with the served key at every check
    resolver: str  # "host:port" of the DNS server for those checks; "" = the system's


class RenewalConfig(NamedTuple):
    auto_renew: bool
    renewal_days: int
    check_interval: float
    renewal_timeout: float


class TLSConfig(NamedTuple):
    enabled: bool
    listen_addr: Address | None
    enable_starttls: bool
    cert_file: Path | None
    key_file: Path | None
    letsencrypt: LetsEncryptConfig
    renewal: RenewalConfig
    dane: DaneConfig = DaneConfig(False, False, "")


class NotifyConfig(NamedTuple):
    recipients: tuple[str, ...]
    sender: str
    relay: str
    relay_username: str
    relay_password: str
    relay_starttls: bool


class MetricsConfig(NamedTuple):
    listen_addr: Address | None  # None: no /metrics and /healthz listener


class MTASTSConfig(NamedTuple):
    enabled: bool
    mode: str  # "enforce" | "testing" | "none"
    max_age: int  # seconds
    mx: tuple[str, ...]  # default: [tls.letsencrypt] domain + extra_names
    policy_domains: tuple[str, ...]  # default: [delivery] local_domains
    tlsrpt_rua: str  # "" = no TLSRPT record


class ClusterConfig(NamedTuple):
    redis_url: str  # "" = a single host
    password_file: Path | None
    key_prefix: str
    node_name: str  # "" = [server] hostname + pid, chosen when the daemon starts
    lock_lease: float
    sync_interval: float

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)


SINGLE_HOST = ClusterConfig("", None, "elemta:", "", 60.0, 30.0)


class Config(NamedTuple):
    path: Path | None
    server: ServerConfig
    delivery: DeliveryConfig
    tls: TLSConfig
    notify: NotifyConfig
    mta_sts: MTASTSConfig
    cluster: ClusterConfig = SINGLE_HOST
    metrics: MetricsConfig = MetricsConfig(listen_addr=None)


def _listen_keys(v: dict[str, dict[str, Any]], https: bool) -> list[str]:
    """The keys of the listeners the daemon binds with these values, in binding order."""
    keys = ["server.listen_addr"]
    if v["tls"]["enabled"]:
        keys.append("tls.listen_addr")
    keys.append("tls.letsencrypt.http_addr")
    if https:
        keys.append("tls.letsencrypt.https_addr")
    keys.append("metrics.listen_addr")
    return keys


def _value(v: dict[str, dict[str, Any]], key: str) -> Address | None:
    """The parsed listen address under ``key`` ("section.name")."""
    section, _, name = key.rpartition(".")
    address: Address | None = v[section][name]
    return address


def _clashes(v: dict[str, dict[str, Any]], *, https: bool) -> list[tuple[str, str]]:
    """(key, earlier key) for each listener whose address collides with an earlier one's."""
    bound: list[tuple[str, Address]] = []
    found = []
    for key in _listen_keys(v, https):
        address = _value(v, key)
        if address is None:
            continue
        for other, earlier in bound:
            if overlaps(address, earlier):
                found.append((key, other))
                break
        bound.append((key, address))
    return found


def _suggest(name: str, choices: list[str]) -> str:
    import difflib  # noqa: PLC0415  (only for a misspelled key: `elemta cert info` stays fast)

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
                                            f"must be a table [{key_path}], got {described(value)}"))
                    continue
                walk(value, key_path)
            elif prefix in SCHEMA and name in SCHEMA[prefix]:
                sections[prefix][name] = value
            else:
                known = list(SCHEMA[prefix]) + [s.rpartition(".")[2] for s in SCHEMA
                                               if s.startswith(prefix + ".")] if prefix else \
                    sorted(SECTIONS)
                what = "unknown key" if prefix else "unknown section"
                problems.append(Problem(path, key_path, lines.get(key_path),
                                        f"{what} \"{name}\"{_suggest(name, known)}"))

    walk(doc, "")
    return sections


def parse_config(text: str, path: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse elemta.toml text into a ``Config`` or raise ``ConfigError``.

    Relative paths in the file are taken relative to ``base_dir`` (the file's folder).
    """
    doc, problems = read_toml(text, path)
    lines = line_index(text)
    raw = _flatten(doc, path, lines, problems)
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
    le, rn, n, c = v["tls.letsencrypt"], v["tls.renewal"], v["notify"], v["cluster"]
    hostname = s["hostname"] or _default_hostname()
    domain = le["domain"] or hostname
    local_domains = d["local_domains"] or (hostname,)
    sts = _mta_sts(v["mta_sts"], domain, le["extra_names"], local_domains)
    names = tuple(dict.fromkeys((domain, *le["extra_names"],
                                 *(f"mta-sts.{p}" for p in sts.policy_domains if sts.enabled))))
    if le["challenge"] == "tls-alpn-01" and le["https_addr"] is None:
        problem("tls.letsencrypt.challenge", 'is "tls-alpn-01" but [tls.letsencrypt] https_addr '
                'is "": the CA validates TLS-ALPN-01 on port 443; set https_addr (default ":443") '
                'or use challenge = "http-01"')
    if sts.enabled and le["https_addr"] is None:
        problem("mta_sts.enabled", 'needs the HTTPS listener, but [tls.letsencrypt] https_addr is "": '
                'set it (default ":443"; senders fetch the policy on port 443) or disable [mta_sts]')
    if not t["enabled"] and sts.enabled:
        problem("tls.enabled", "is false, but [mta_sts] enabled needs the HTTPS listener, which "
                "needs TLS: set [tls] enabled = true")
    if le["enabled"] and not le["email"]:
        problem("tls.letsencrypt.email", "is required when [tls.letsencrypt] enabled = true: "
                "the CA sends expiry warnings there and elemta mails its notices there")
    if le["directory_url"] and not re.match(r"^https?://[^\s/]+", le["directory_url"]):
        problem("tls.letsencrypt.directory_url",
                f"{toml_text(le['directory_url'])} is not a URL such as \"https://acme.example/directory\"")
    if (t["cert_file"] is None) != (t["key_file"] is None):
        problem("tls.cert_file" if t["cert_file"] is None else "tls.key_file",
                "set both cert_file and key_file to use a certificate managed by hand, or neither")
    if c["password_file"] is not None and ":" in c["redis_url"].partition("://")[2] \
            .rpartition("@")[0]:
        problem("cluster.password_file", "the password is given twice, in [cluster] redis_url "
                "and in password_file: keep it in password_file only (redis://host:6379/0)")
    if le["key_type"] == "ecdsa+rsa" and c["redis_url"]:
        problem("tls.letsencrypt.key_type", '"ecdsa+rsa" cannot be shared through [cluster] '
                'redis_url yet (the cluster shares one certificate per name): use "ecdsa" or '
                '"rsa" in a cluster')
    for key, other in _clashes(v, https=t["enabled"] and le["https_addr"] is not None and (
            le["challenge"] == "tls-alpn-01" or sts.enabled)):
        problem(key, f'"{_value(v, key)}" takes the port of [{other.rpartition(".")[0]}] '
                f'{other.rpartition(".")[2]} = "{_value(v, other)}": two of elemta\'s listeners '
                "cannot share a port; give this one a port of its own")
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
                https_addr=le["https_addr"],
                challenge=le["challenge"],
                extra_names=tuple(dict.fromkeys(n for n in le["extra_names"] if n != domain)),
                names=names,
            ),
            renewal=RenewalConfig(**rn),
            dane=DaneConfig(**v["tls.dane"]),
        ),
        notify=NotifyConfig(
            recipients=tuple(r for r in n["recipients"] if r) or ((le["email"],) if le["email"] else ()),
            sender=n["sender"] or f"elemta@{hostname}",
            relay=n["relay"],
            relay_username=n["relay_username"],
            relay_password=n["relay_password"],
            relay_starttls=n["relay_starttls"],
        ),
        mta_sts=sts,
        cluster=ClusterConfig(**{**c, "password_file": _absolute(c["password_file"], base_dir)}),
        metrics=MetricsConfig(**v["metrics"]),
    )
    return config, problems


def _mta_sts(m: dict[str, Any], domain: str, extra_names: tuple[str, ...],
             local_domains: tuple[str, ...]) -> MTASTSConfig:
    """[mta_sts] with its defaults: mx = the certificate's MX names, policy_domains = the
    local domains."""
    return MTASTSConfig(
        enabled=m["enabled"], mode=m["mode"], max_age=int(m["max_age"]),
        mx=tuple(dict.fromkeys(m["mx"] or (domain, *extra_names))),
        policy_domains=tuple(dict.fromkeys(m["policy_domains"] or local_domains)),
        tlsrpt_rua=m["tlsrpt_rua"],
    )


def _default_hostname() -> str:
    import socket  # noqa: PLC0415  (only without [server] hostname)

    name = socket.getfqdn().lower().rstrip(".")
    return name if DOMAIN.match(name) else "localhost"


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
    config = parse_config(text, str(path), path.absolute().parent)
    # absolute: certbot stores --elemta-config for renewals run from anywhere
    return config._replace(path=path.absolute())


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
