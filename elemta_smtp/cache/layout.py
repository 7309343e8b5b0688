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


def state_path(cache_dir: Path, variant: str = "") -> Path:
    """``state.json``: the notices of live/<domain>.pem (``state.<variant>.json``: those of
    live/<domain>.<variant>.pem)."""
    return cache_dir / (f"state.{variant}.json" if variant else "state.json")


def bootstrap_path(cache_dir: Path) -> Path:
    return cache_dir / "bootstrap.pem"


#: Second certificates for the same name, by key type: with ``key_type = "ecdsa+rsa"`` the
#: RSA certificate of <name> is ``live/<name>.rsa.pem``, next to the ECDSA ``live/<name>.pem``.
VARIANTS = ("rsa",)


def certificate_path(cache_dir: Path, name: str, variant: str = "") -> Path:
    """``live/<name>.pem`` (``live/<name>.<variant>.pem`` for a second certificate of the same
    name, see ``VARIANTS``); ``name`` must be a DNS name, so it can never leave live/."""
    clean = normalize(name)
    if not is_dns_name(clean):
        raise InvalidName(name)
    if variant and variant not in VARIANTS:
        raise ValueError(f"unknown certificate variant {variant!r}")
    return live_dir(cache_dir) / (f"{clean}.{variant}.pem" if variant else f"{clean}.pem")


def live_name(filename: str) -> tuple[str, str] | None:
    """What a file name in live/ stands for: ``(name, variant)`` ("mail.example.com.pem" ->
    ("mail.example.com", ""), "mail.example.com.rsa.pem" -> ("mail.example.com", "rsa")), or
    None when it is not the name of a certificate file."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot or suffix != "pem" or not is_dns_name(stem):
        return None
    base, dot, last = stem.rpartition(".")
    if dot and last in VARIANTS and is_dns_name(base) and "." in base:
        return base, last
    return stem, ""


# --- DANE: the next key of a staged rollover, and where the rollover stands ---

def dane_dir(cache_dir: Path) -> Path:
    """Next keys of staged TLSA rollovers and their records (0700: keys are secret)."""
    return cache_dir / "dane"


def next_key_path(cache_dir: Path, name: str, variant: str = "") -> Path:
    """``dane/<name>[.<variant>].next-key.pem``: the key the next rollover of the certificate
    in ``certificate_path(cache_dir, name, variant)`` brings (PEM, 0600)."""
    live = certificate_path(cache_dir, name, variant)
    return dane_dir(cache_dir) / f"{live.name[:-len('.pem')]}.next-key.pem"


def rollover_path(cache_dir: Path, name: str, variant: str = "") -> Path:
    """``dane/<name>[.<variant>].rollover.json``: when the rollover started, the TLSA values
    of the keys involved, and the record that can go once it is finished."""
    live = certificate_path(cache_dir, name, variant)
    return dane_dir(cache_dir) / f"{live.name[:-len('.pem')]}.rollover.json"


def swapped_key_path(cache_dir: Path, name: str, variant: str = "") -> Path:
    """``dane/<name>[.<variant>].lineage-key.json``: while ``elemta dane rollover finish``
    runs certbot, which file of certbot's lineage holds the next key, and that file's own
    key (0600), so that a finish killed meanwhile can be undone later."""
    live = certificate_path(cache_dir, name, variant)
    return dane_dir(cache_dir) / f"{live.name[:-len('.pem')]}.lineage-key.json"


def ari_path(cache_dir: Path) -> Path:
    """``ari.json``: the renewal windows the CA suggested (ACME Renewal Information, RFC 9773)
    and the moment chosen in each, by certificate."""
    return cache_dir / "ari.json"


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
    for folder in (cache_dir, live_dir(cache_dir), certbot_dir(cache_dir), lineage_dir(cache_dir),
                   dane_dir(cache_dir)):
        make_dir(folder, PRIVATE_DIR_MODE)
    # The daemon (or another web server) must be able to read challenge answers.
    for folder in (webroot(cache_dir), webroot(cache_dir) / ".well-known", challenge_dir(cache_dir),
                   tls_alpn_dir(cache_dir)):
        make_dir(folder, PUBLIC_DIR_MODE)
