"""Certificates in the cache: ``live/<name>.pem`` (key + leaf + chain in one file, so a
reader never sees a new key with an old chain) and the self-signed ``bootstrap.pem``.
Every write is validated first (nothing invalid is ever installed) and atomic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.cache.layout import (
    bootstrap_path,
    certificate_path,
    ensure_layout,
    live_dir,
    live_name,
)
from elemta_smtp.certs.bundle import (
    CertificateBundle,
    dns_names,
    key_kind,
    parse_bundle,
    serial_hex,
    spki_sha256,
)
from elemta_smtp.certs.validate import check_bundle, check_structure
from elemta_smtp.errors import CacheError, InvalidCertificate


def _join_pem(*parts: bytes) -> bytes:
    return b"".join(p.strip() + b"\n" for p in parts if p.strip())


def check_certificate(cache_dir: Path, name: str, key_pem: bytes,
                      fullchain_pem: bytes, variant: str = "") -> tuple[Path, bytes]:
    """Where ``write_certificate`` would install this key and full chain, and the bytes it
    would write; ``InvalidName`` or ``InvalidCertificate`` when it would refuse them."""
    path = certificate_path(cache_dir, name, variant)
    data = _join_pem(key_pem, fullchain_pem)
    check_structure(parse_bundle(data, path))
    return path, data


def write_certificate(cache_dir: Path, name: str, key_pem: bytes, fullchain_pem: bytes,
                      variant: str = "") -> Path:
    """Validate, then atomically install ``live/<name>.pem`` (key + leaf + chain, 0600;
    ``live/<name>.<variant>.pem`` for the second certificate of a name).

    The key must match the leaf and the chain must be in order and complete, else
    ``InvalidCertificate`` and nothing is written.
    """
    path, data = check_certificate(cache_dir, name, key_pem, fullchain_pem, variant)
    ensure_layout(cache_dir)
    atomic_write(path, data)
    return path


def check_published(cache_dir: Path, name: str, pem: bytes, serial: str,
                    now: datetime) -> tuple[Path, CertificateBundle]:
    """Would ``live/<name>.pem`` be served if it held ``pem`` (a combined PEM published by
    another host, said to have ``serial``)? The checks every certificate file gets (key
    matches leaf, chain complete, not expired, names cover ``name``), and the serial must be
    the one announced. Returns where it would go and the parsed bundle; raises
    ``InvalidName`` or ``InvalidCertificate`` saying why not."""
    path = certificate_path(cache_dir, name)
    bundle = parse_bundle(pem, path)
    check_bundle(bundle, now=now, required_name=name)
    actual = serial_hex(bundle.leaf)
    if actual != serial.lower():
        raise InvalidCertificate(path, f"it was published as serial {serial} but its "
                                       f"certificate has serial {actual}")
    return path, bundle


def write_published(cache_dir: Path, name: str, pem: bytes, serial: str, now: datetime) -> Path:
    """Validate (``check_published``), then atomically install ``live/<name>.pem``."""
    path, _bundle = check_published(cache_dir, name, pem, serial, now)
    ensure_layout(cache_dir)
    atomic_write(path, pem)
    return path


def serial_of(pem: bytes) -> str:
    """The serial (lower-case hex) of the leaf in a combined PEM already checked."""
    return serial_hex(parse_bundle(pem, Path("<published>")).leaf)


def write_bootstrap(cache_dir: Path, pem: bytes) -> Path:
    """Atomically install the self-signed fallback at ``<cache_dir>/bootstrap.pem``."""
    path = bootstrap_path(cache_dir)
    check_structure(parse_bundle(pem, path))
    ensure_layout(cache_dir)
    atomic_write(path, pem)
    return path


def read_bundle(path: Path, key_path: Path | None = None) -> CertificateBundle:
    """Parse a combined PEM (or a certificate file plus a separate key file).

    Raises ``InvalidCertificate(path, reason)`` for a missing, unreadable or malformed file.
    """
    return parse_bundle(read_bytes(path, key_path), path)


@dataclass(frozen=True)
class Installed:
    """The facts of an installed certificate a report needs, without its key."""

    path: Path
    names: tuple[str, ...]
    serial: str  # lower-case hex
    not_after: datetime
    key_type: str = ""  # "ecdsa" | "rsa"
    spki_sha256: str = ""  # of its public key, as in its TLSA 3 1 1 record


def read_installed(path: Path) -> Installed:
    """The names, serial and expiry of the certificate in ``path`` (``live/<name>.pem``).
    Raises ``InvalidCertificate`` like ``read_bundle``."""
    leaf = read_bundle(path).leaf
    return Installed(path, dns_names(leaf), serial_hex(leaf), leaf.not_valid_after_utc,
                     key_kind(leaf.public_key()), spki_sha256(leaf))


def read_bytes(path: Path, key_path: Path | None = None) -> bytes:
    """The raw PEM of a certificate file (with the separate key file's PEM first, if given)."""
    data = _read(path)
    if key_path is not None:
        data = _join_pem(_read(key_path, report_as=path), data)
    return data


def _read(path: Path, report_as: Path | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1024 * 1024 + 1)
    except FileNotFoundError:
        raise InvalidCertificate(report_as or path, f"{path} does not exist") from None
    except OSError as exc:
        raise InvalidCertificate(report_as or path, f"cannot read {path}: {exc.strerror}; "
                                                    "make it readable by the user running elemta") from None


def variant_for(key_types: tuple[str, ...], key_pem: bytes) -> str:
    """Which live/ file of a name a certificate with this key goes to, for the configured
    key types (``[tls.letsencrypt] key_type``): "" (``live/<name>.pem``) or, for the RSA
    certificate of ``key_type = "ecdsa+rsa"``, "rsa" (``live/<name>.rsa.pem``)."""
    if len(key_types) < 2:
        return ""
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return ""  # check_certificate says what is wrong with it
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else ""


def list_live(cache_dir: Path) -> list[Path]:
    """The certificate files in live/ (``<dns-name>.pem``, ``<dns-name>.rsa.pem``), sorted;
    temp files are skipped."""
    try:
        entries = list(live_dir(cache_dir).iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CacheError(f"cannot list {live_dir(cache_dir)}: {exc.strerror}") from None
    return sorted(p for p in entries
                  if live_name(p.name) is not None and p.is_file())
