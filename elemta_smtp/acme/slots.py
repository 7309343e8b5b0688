"""The certificates elemta keeps for ``[tls.letsencrypt] domain``: one per key type of
``key_type`` ("ecdsa", "rsa", or both for "ecdsa+rsa"). Each has its certbot lineage and its
live/ file: the first ``<domain>`` and ``live/<domain>.pem``, the RSA one of "ecdsa+rsa"
``<domain>-rsa`` and ``live/<domain>.rsa.pem`` (layout.py names them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elemta_smtp.cache.layout import certificate_path
from elemta_smtp.config import Config

KEY_WORDS = {"ecdsa": "ECDSA", "rsa": "RSA"}


@dataclass(frozen=True)
class Slot:
    """One certificate elemta keeps: its key type, live/ file variant and lineage name."""

    domain: str
    key_type: str  # "ecdsa" | "rsa"
    variant: str = ""  # "" (live/<domain>.pem) | "rsa" (live/<domain>.rsa.pem)
    cert_name: str = ""  # certbot's lineage name

    @property
    def is_companion(self) -> bool:
        """The second certificate of key_type = "ecdsa+rsa"."""
        return bool(self.variant)

    @property
    def key(self) -> str:
        """A name for it in files and logs: ``mail.example.com`` or ``mail.example.com.rsa``."""
        return f"{self.domain}.{self.variant}" if self.variant else self.domain

    @property
    def what(self) -> str:
        """"certificate", or "RSA certificate" for the companion (log lines, mails)."""
        return f"{KEY_WORDS[self.key_type]} certificate" if self.variant else "certificate"

    def live_path(self, cache_dir: Path) -> Path:
        return certificate_path(cache_dir, self.domain, self.variant)


def slots(config: Config) -> tuple[Slot, ...]:
    """The certificates ``config`` asks for, the one in live/<domain>.pem first."""
    le = config.tls.letsencrypt
    first, *more = le.key_types
    found = [Slot(le.domain, first, "", le.domain)]
    found += [Slot(le.domain, kind, kind, f"{le.domain}-{kind}") for kind in more]
    return tuple(found)


def primary(config: Config) -> Slot:
    return slots(config)[0]
