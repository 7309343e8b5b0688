"""The staged TLSA rollover in the cache: the next key (``dane/<name>.next-key.pem``, 0600)
and where the rollover stands (``dane/<name>.rollover.json``), by live/ file (name and
variant, as in ``layout.certificate_path``). Everything is written through ``atomic_write``.

``elemta dane rollover start`` makes the next key; ``finish`` has certbot renew with it and
then records the key no longer served (its TLSA record can go), and removes the next key.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.cache.layout import ensure_layout, next_key_path, rollover_path
from elemta_smtp.errors import CacheError

#: The keys certbot makes by default for each key type, so that certbot's checks of a
#: reused key (``--reuse-key`` with ``--key-type``) accept the next key as it accepts its own.
RSA_BITS = 2048


def make_key(key_type: str) -> bytes:
    """A new private key as PKCS#8 PEM: ECDSA P-256 ("ecdsa") or RSA 2048 ("rsa")."""
    key: PrivateKeyTypes
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif key_type == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown key type {key_type!r}: \"ecdsa\" or \"rsa\"")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes, path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The private key in ``pem`` (read from ``path``); ``CacheError`` when it is not an RSA
    or ECDSA one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CacheError(f"{path} does not hold a private key ({exc}): remove it and run "
                         "`elemta dane rollover start` again") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CacheError(f"{path} holds a {type(key).__name__}, not an RSA or ECDSA key: remove "
                         "it and run `elemta dane rollover start` again")
    return key


def key_type_of(pem: bytes, path: Path = Path("the next key")) -> str:
    """"rsa" or "ecdsa": the type of the key in ``pem`` (certbot's --key-type for it)."""
    return "rsa" if isinstance(load_key(pem, path), rsa.RSAPrivateKey) else "ecdsa"


def write_next_key(cache_dir: Path, name: str, variant: str, key_pem: bytes) -> Path:
    """Store the next key of the live/ file (0600, atomically)."""
    path = next_key_path(cache_dir, name, variant)
    ensure_layout(cache_dir)
    atomic_write(path, key_pem)
    return path


def read_next_key(cache_dir: Path, name: str, variant: str = "") -> bytes | None:
    """The next key's PEM, or None when no rollover is under way."""
    path = next_key_path(cache_dir, name, variant)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"cannot read {path}: {exc.strerror}; run elemta as the user that "
                         "owns the cache") from None


def remove_next_key(cache_dir: Path, name: str, variant: str = "") -> None:
    with contextlib.suppress(FileNotFoundError):
        next_key_path(cache_dir, name, variant).unlink()


@dataclass(frozen=True)
class Rollover:
    """Where a rollover stands. ``current`` and ``next`` are TLSA values ("3 1 1 <hex>")."""

    started: datetime
    current: str  # the key served when it started ("" when none was)
    next: str
    key_type: str  # of the next key
    finished: datetime | None = None
    retired: str = ""  # once finished: the key no longer served; its record can be removed


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a time, got {value!r}")
    return datetime.fromisoformat(value)


def read_rollover(cache_dir: Path, name: str, variant: str = "") -> Rollover | None:
    """The rollover record; None when there is none or it is unreadable (a rollover can
    always be started again)."""
    try:
        raw = json.loads(rollover_path(cache_dir, name, variant).read_bytes())
        started = _time(raw["started"])
        assert started is not None
        return Rollover(started, str(raw["current"]), str(raw["next"]), str(raw["key_type"]),
                        _time(raw.get("finished")), str(raw.get("retired", "")))
    except (OSError, ValueError, KeyError, TypeError, AssertionError, OverflowError,
            RecursionError):  # RecursionError: JSON nested too deep
        return None


def write_rollover(cache_dir: Path, name: str, variant: str, rollover: Rollover) -> Path:
    path = rollover_path(cache_dir, name, variant)
    doc = {"started": rollover.started.isoformat(), "current": rollover.current,
           "next": rollover.next, "key_type": rollover.key_type,
           "finished": rollover.finished.isoformat() if rollover.finished else None,
           "retired": rollover.retired}
    ensure_layout(cache_dir)
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path
