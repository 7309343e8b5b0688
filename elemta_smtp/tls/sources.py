"""Where served certificates come from, in priority order, and which one is the default;
and the warnings about those files (skipped names, private keys others can read).

Shared by the daemon (context.py) and ``elemta cert info`` (info.py), so both
agree on what is served and warn alike. No Twisted, no OpenSSL contexts here.
"""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from elemta_smtp.cache.layout import bootstrap_path, live_dir, live_name
from elemta_smtp.cache.live import list_live, read_bytes
from elemta_smtp.certs.bundle import CertificateBundle, parse_bundle
from elemta_smtp.certs.names import is_dns_name
from elemta_smtp.certs.validate import check_bundle
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError

if TYPE_CHECKING:
    from twisted.logger import Logger

Kind = Literal["hand", "live", "bootstrap"]


class Source(NamedTuple):
    """One certificate file the daemon serves from.

    ``own_name`` is the <name> of live/<name>.pem, which the certificate must cover;
    ``variant`` is "rsa" for live/<name>.rsa.pem, the RSA certificate served next to the
    ECDSA one of the same name (``key_type = "ecdsa+rsa"``).
    (A NamedTuple rather than a frozen dataclass: as immutable, cheaper to create at import.)
    """

    kind: Kind
    path: Path
    key_path: Path | None = None
    own_name: str | None = None
    variant: str = ""

    def read(self) -> bytes:
        """The file's bytes (key file first for a hand-managed pair); raises InvalidCertificate."""
        return read_bytes(self.path, self.key_path)

    def load(self, data: bytes, now: datetime) -> CertificateBundle:
        """Parse and validate ``data`` read from this source; raises InvalidCertificate."""
        bundle = parse_bundle(data, self.path)
        check_bundle(bundle, now=now, required_name=self.own_name)
        return bundle


def configured_sources(config: Config) -> list[Source]:
    """The hand-managed [tls] cert_file/key_file first (if set), then live/*.pem by name."""
    sources: list[Source] = []
    tls = config.tls
    if tls.cert_file is not None:
        sources.append(Source("hand", tls.cert_file, tls.key_file))
    for path in list_live(tls.letsencrypt.cache_dir):
        name, variant = live_name(path.name) or (path.name, "")
        sources.append(Source("live", path, own_name=name, variant=variant))
    return sources


def bootstrap_source(config: Config) -> Source:
    """The self-signed fallback, used only when no other source is servable."""
    return Source("bootstrap", bootstrap_path(config.tls.letsencrypt.cache_dir))


def preferred_names(config: Config) -> tuple[str, ...]:
    """The names whose certificate is the default (no SNI or an unknown name)."""
    return tuple(dict.fromkeys((config.tls.letsencrypt.domain, config.server.hostname)))


# --- warnings: nothing is refused for these, but the admin should know ---

def skipped_reason(name: str, is_dir: bool) -> str | None:
    """Why the entry ``name`` of live/ is not served, or None when it is (``<dns-name>.pem``)
    or is a hidden file (a temporary file of an atomic write, such as ``.tmp``)."""
    if name.startswith("."):
        return None
    if is_dir:
        return ("it is a folder; only files named <domain>.pem here are served (install "
                "certbot's certificates with `certbot --installer elemta`)")
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix != "pem":
        base = stem if dot else name
        hint = f", such as {base.lower()}.pem" if "." in base and is_dns_name(base.lower()) else ""
        return f"only files named <domain>.pem here are served: rename it{hint}"
    if is_dns_name(stem):
        return None
    if is_dns_name(stem.lower()):
        return f"\"{stem}\" is not written in lower case: rename it {stem.lower()}.pem"
    return (f"\"{stem}\" is not a DNS name: name the file after the certificate's domain, such "
            "as mail.example.com.pem")


def key_mode_warning(path: Path, mode: int) -> str | None:
    """A sentence when the file at ``path`` holding a private key is open to its group or
    others (``mode``: the permission bits), else None."""
    who = [w for w, bits in (("its group", 0o070), ("others", 0o007)) if mode & bits]
    if not who:
        return None
    verb = "can read" if mode & 0o044 else "can write"
    return (f"{path} holds a private key and {' and '.join(who)} {verb} it (mode {mode:04o}): "
            f"chmod 600 {path}")


def file_warnings(config: Config) -> list[str]:
    """Warnings about the certificate files, for ``elemta cert info`` and the daemon's
    reload log: live/ entries that are skipped, and key files open to group or others
    ([tls] key_file, live/*.pem, bootstrap.pem). Never raises for unreadable places."""
    tls = config.tls
    cache = tls.letsencrypt.cache_dir
    warnings: list[str] = []
    try:
        entries = sorted(live_dir(cache).iterdir())
    except OSError:
        entries = []
    try:
        live = list_live(cache)
    except CacheError:
        live = []
    for entry in entries:
        reason = skipped_reason(entry.name, entry.is_dir())
        if reason is None and not entry.name.startswith(".") and entry not in live:
            reason = "it is not a regular file (a broken symbolic link?)"
        if reason is not None:
            warnings.append(f"{entry} is skipped: {reason}")
    keys = [p for p in (tls.key_file, *live, bootstrap_path(cache)) if p is not None]
    for path in keys:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        warning = key_mode_warning(path, mode)
        if warning is not None:
            warnings.append(warning)
    return warnings


def log_file_warnings(config: Config, log: Logger) -> None:
    """The daemon's side of ``file_warnings``: one warning line per finding, at each reload."""
    for warning in file_warnings(config):
        log.warn("TLS certificate file: {warning}", warning=warning)
