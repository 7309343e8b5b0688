"""Where everything lies in the cache directory, and the folders with their modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from elemta_smtp.certs.names import is_dns_name, normalize
from elemta_smtp.errors import CacheError, InvalidName

PRIVATE_DIR_MODE = 0o700
PUBLIC_DIR_MODE = 0o755
FILE_MODE = 0o600


def live_dir(cache_dir: Path) -> Path:
    return cache_dir / "live"


def webroot(cache_dir: Path) -> Path:
    return cache_dir / "webroot"


def challenge_dir(cache_dir: Path) -> Path:
    return webroot(cache_dir) / ".well-known" / "acme-challenge"


def tls_alpn_dir(cache_dir: Path) -> Path:
    """TLS-ALPN-01 answers: one file per pending name holding its key authorization."""
    return cache_dir / "tls-alpn-01"


def certbot_dir(cache_dir: Path) -> Path:
    return cache_dir / "certbot"


def certbot_folders(cache_dir: Path) -> tuple[Path, Path, Path]:
    """certbot's config, work and logs folders when elemta itself drives certbot."""
    base = certbot_dir(cache_dir)
    return base / "config", base / "work", base / "logs"


def lineage_dir(cache_dir: Path) -> Path:
    return certbot_dir(cache_dir) / "lineages"


def state_path(cache_dir: Path) -> Path:
    return cache_dir / "state.json"


def bootstrap_path(cache_dir: Path) -> Path:
    return cache_dir / "bootstrap.pem"


def certificate_path(cache_dir: Path, name: str) -> Path:
    """``live/<name>.pem``; ``name`` must be a DNS name, so it can never leave live/."""
    clean = normalize(name)
    if not is_dns_name(clean):
        raise InvalidName(name)
    return live_dir(cache_dir) / f"{clean}.pem"


def adopt(path: Path, folder: Path) -> None:
    """Run as root (``sudo certbot ... -i elemta``), give what we create the owner of the
    folder it is in, so the daemon, which runs as that user, can read and replace it."""
    if os.geteuid() != 0:
        return
    info = folder.stat()
    if info.st_uid != 0:
        os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)


def make_dir(path: Path, mode: int) -> None:
    """Create ``path`` (its parent must exist) with ``mode``, owned like its parent when
    made as root; tighten a mode that drifted."""
    try:
        if not path.is_dir():
            path.mkdir(mode=mode, exist_ok=True)
            adopt(path, path.parent)
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except OSError as exc:
        raise CacheError(f"cannot create {path} with mode {mode:o}: {exc.strerror}; "
                         "check that the parent folder belongs to the user running elemta") from None


def ensure_layout(cache_dir: Path) -> None:
    """Create the cache folders with their modes (idempotent; tightens modes that drifted)."""
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create {cache_dir.parent} for the certificate cache: "
                         f"{exc.strerror}; create it or change [tls.letsencrypt] cache_dir") from None
    for folder in (cache_dir, live_dir(cache_dir), certbot_dir(cache_dir), lineage_dir(cache_dir)):
        make_dir(folder, PRIVATE_DIR_MODE)
    # The daemon (or another web server) must be able to read challenge answers.
    for folder in (webroot(cache_dir), webroot(cache_dir) / ".well-known", challenge_dir(cache_dir),
                   tls_alpn_dir(cache_dir)):
        make_dir(folder, PUBLIC_DIR_MODE)
