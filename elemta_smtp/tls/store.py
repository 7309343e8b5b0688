"""The certificate cache directory: the contract between the daemon and the certbot plugin.

This module is the only code that writes the layout::

    <cache_dir>/                      0700
      live/<name>.pem                 key + leaf + chain, 0600, replaced atomically
      webroot/.well-known/acme-challenge/   0755, HTTP-01 answers
      certbot/                        certbot's own config/work/logs
      bootstrap.pem                   the self-signed fallback, 0600
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from elemta_smtp.tls.bundle import CertificateBundle, parse_bundle
from elemta_smtp.tls.errors import InvalidCertificate, InvalidName, StoreError
from elemta_smtp.tls.names import is_dns_name, normalize
from elemta_smtp.tls.validate import check_structure

__all__ = [
    "CertificateBundle",
    "InvalidCertificate",
    "InvalidName",
    "StoreError",
    "bootstrap_path",
    "certificate_path",
    "challenge_dir",
    "ensure_layout",
    "list_live",
    "live_dir",
    "read_bundle",
    "read_bytes",
    "webroot",
    "write_bootstrap",
    "write_certificate",
]

PRIVATE_DIR_MODE = 0o700
PUBLIC_DIR_MODE = 0o755
FILE_MODE = 0o600


def live_dir(cache_dir: Path) -> Path:
    return cache_dir / "live"


def webroot(cache_dir: Path) -> Path:
    return cache_dir / "webroot"


def challenge_dir(cache_dir: Path) -> Path:
    return webroot(cache_dir) / ".well-known" / "acme-challenge"


def certbot_dir(cache_dir: Path) -> Path:
    return cache_dir / "certbot"


def bootstrap_path(cache_dir: Path) -> Path:
    return cache_dir / "bootstrap.pem"


def certificate_path(cache_dir: Path, name: str) -> Path:
    """``live/<name>.pem``; ``name`` must be a DNS name, so it can never leave live/."""
    clean = normalize(name)
    if not is_dns_name(clean):
        raise InvalidName(name)
    return live_dir(cache_dir) / f"{clean}.pem"


def _adopt(path: Path, folder: Path) -> None:
    """Run as root (``sudo certbot ... -i elemta``), give what we create the owner of the
    folder it is in, so the daemon, which runs as that user, can read and replace it."""
    if os.geteuid() != 0:
        return
    info = folder.stat()
    if info.st_uid != 0:
        os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)


def _make_dir(path: Path, mode: int) -> None:
    try:
        if not path.is_dir():
            path.mkdir(mode=mode, exist_ok=True)
            _adopt(path, path.parent)
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except OSError as exc:
        raise StoreError(f"cannot create {path} with mode {mode:o}: {exc.strerror}; "
                         "check that the parent folder belongs to the user running elemta") from None


def ensure_layout(cache_dir: Path) -> None:
    """Create the cache folders with their modes (idempotent; tightens modes that drifted)."""
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {cache_dir.parent} for the certificate cache: {exc.strerror}; "
                         "create it or change [tls.letsencrypt] cache_dir") from None
    _make_dir(cache_dir, PRIVATE_DIR_MODE)
    _make_dir(live_dir(cache_dir), PRIVATE_DIR_MODE)
    _make_dir(certbot_dir(cache_dir), PRIVATE_DIR_MODE)
    # The daemon (or another web server) must be able to read challenge answers.
    for folder in (webroot(cache_dir), webroot(cache_dir) / ".well-known", challenge_dir(cache_dir)):
        _make_dir(folder, PUBLIC_DIR_MODE)


def _join_pem(*parts: bytes) -> bytes:
    return b"".join(p.strip() + b"\n" for p in parts if p.strip())


def write_certificate(cache_dir: Path, name: str, key_pem: bytes, fullchain_pem: bytes) -> Path:
    """Validate, then atomically install ``live/<name>.pem`` (key + leaf + chain, 0600).

    The key must match the leaf and the chain must be in order, else
    ``InvalidCertificate`` and nothing is written. Readers see the old file or the
    new one, never a mix.
    """
    path = certificate_path(cache_dir, name)
    data = _join_pem(key_pem, fullchain_pem)
    check_structure(parse_bundle(data, path))
    ensure_layout(cache_dir)
    atomic_write(path, data)
    return path


def write_bootstrap(cache_dir: Path, pem: bytes) -> Path:
    """Atomically install the self-signed fallback at ``<cache_dir>/bootstrap.pem``."""
    path = bootstrap_path(cache_dir)
    check_structure(parse_bundle(pem, path))
    ensure_layout(cache_dir)
    atomic_write(path, pem)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write a 0600 temp file next to ``path``, fsync, rename over, fsync the folder.

    On any failure the temp file is removed and ``StoreError`` says what to do.
    """
    import secrets  # noqa: PLC0415  (writers only: `elemta cert info` starts faster without it)

    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StoreError(f"cannot create a file in {folder}: {exc.strerror}; run as the user that owns "
                         "the certificate cache (the one running elemta)") from None
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            _adopt(tmp, folder)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write {path}: {exc.strerror}; the previous file (if any) is "
                         "unchanged — free disk space or fix permissions and try again") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bundle(path: Path, key_path: Path | None = None) -> CertificateBundle:
    """Parse a combined PEM (or a certificate file plus a separate key file).

    Raises ``InvalidCertificate(path, reason)`` for a missing, unreadable or malformed file.
    """
    return parse_bundle(read_bytes(path, key_path), path)


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


def list_live(cache_dir: Path) -> list[Path]:
    """The certificate files in live/ (``<dns-name>.pem``), sorted; temp files are skipped."""
    try:
        entries = list(live_dir(cache_dir).iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {live_dir(cache_dir)}: {exc.strerror}") from None
    return sorted(p for p in entries
                  if p.suffix == ".pem" and is_dns_name(p.name[:-4]) and p.is_file())
