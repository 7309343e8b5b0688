"""DANE (RFC 7672) for port 25: which TLSA records a key needs, whether published records
match the certificate served, and the sentences about it. Pure: the lookups are the
caller's (``danecheck.py``), "now" is not needed.

A TLSA record matches when its certificate usage is 3 (DANE-EE: the server's own
certificate or key) and its data is the leaf's, or 2 (DANE-TA: a trust anchor) and its
data is one of the chain's; selector 0 is the whole certificate, 1 its public key
(SubjectPublicKeyInfo); matching type 0 the data itself, 1 its SHA-256, 2 its SHA-512.
Usages 0 and 1 (PKIX) are ignored by SMTP senders (RFC 7672 section 3.1.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from elemta_smtp.certs.names import covers
from elemta_smtp.config import Config


def spki_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_value(key: PublicKeyTypes) -> str:
    """The RDATA of the ``TLSA 3 1 1`` record for ``key``: "3 1 1 <sha256 hex>"."""
    return f"3 1 1 {hashlib.sha256(spki_der(key)).hexdigest()}"


def owner(name: str) -> str:
    """The TLSA owner name for SMTP on ``name``: ``_25._tcp.<name>.``"""
    return f"_25._tcp.{name.lower().rstrip('.')}."


def record_line(name: str, value: str) -> str:
    """A zone-file line: ``_25._tcp.mail.example.com. IN TLSA 3 1 1 <hex>``."""
    return f"{owner(name)} IN TLSA {value}"


def _data(cert: x509.Certificate, selector: int) -> bytes | None:
    if selector == 0:
        return cert.public_bytes(serialization.Encoding.DER)
    if selector == 1:
        return spki_der(cert.public_key())
    return None


def _digest(data: bytes, mtype: int) -> bytes | None:
    if mtype == 0:
        return data
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return None


def parse_value(value: str) -> tuple[int, int, int, bytes] | None:
    """``"3 1 1 ab12..."`` -> (usage, selector, matching type, data); None when malformed."""
    parts = value.split()
    if len(parts) < 4:
        return None
    try:
        usage, selector, mtype = (int(p) for p in parts[:3])
        data = bytes.fromhex("".join(parts[3:]))
    except ValueError:
        return None
    return usage, selector, mtype, data


def matches(value: str, leaf: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> bool:
    """Does the TLSA record ``value`` ("3 1 1 <hex>") match this leaf and chain?"""
    parsed = parse_value(value)
    if parsed is None:
        return False
    usage, selector, mtype, want = parsed
    if usage == 3:
        candidates: Iterable[x509.Certificate] = (leaf,)
    elif usage == 2:
        candidates = chain
    else:
        return False
    for cert in candidates:
        data = _data(cert, selector)
        if data is not None and _digest(data, mtype) == want:
            return True
    return False


def mx_hosts(config: Config, names: Iterable[str]) -> list[str]:
    """The MX host names (``[mta_sts] mx``, by default the domain and extra_names) that a
    certificate with ``names`` is presented for: where its TLSA records belong."""
    names = tuple(names)
    return [h for h in config.mta_sts.mx if not h.startswith("*.") and covers(names, h)]


@dataclass(frozen=True)
class NameCheck:
    """What DNS holds at ``_25._tcp.<name>`` compared with the certificate served for it."""

    name: str
    found: tuple[str, ...]  # TLSA values ("3 1 1 <hex>") published; empty: none
    error: str | None = None  # the lookup failed: nothing can be said
    matched: bool = False

    @property
    def mismatch(self) -> bool:
        """Records are published and none matches: DANE senders refuse to deliver."""
        return bool(self.found) and not self.matched and self.error is None


def check_names(found: dict[str, tuple[tuple[str, ...], str | None]], leaf: x509.Certificate,
                chain: Sequence[x509.Certificate] = ()) -> list[NameCheck]:
    """Each name's published TLSA values (and lookup error) checked against the certificate."""
    return [NameCheck(name, values, error,
                      error is None and any(matches(v, leaf, chain) for v in values))
            for name, (values, error) in found.items()]


def mismatch_sentence(checks: Sequence[NameCheck], served: str) -> str:
    """Why DANE senders refuse this host now, in one sentence with the fix; ``served`` is the
    TLSA value of the key served ("3 1 1 <hex>")."""
    bad = [c for c in checks if c.mismatch]
    where = "; ".join(f"{owner(c.name)} has {', '.join(c.found)}" for c in bad)
    names = ", ".join(c.name for c in bad)
    return (f"the key served for {names} ({served}) matches no published TLSA record ({where}): "
            "senders that validate DANE do not deliver mail to it. Publish "
            + ", ".join(record_line(c.name, served) for c in bad)
            + " (keep a record for a key you are rolling over to), or serve the key the "
              "records name; `elemta dane status --check` shows both")
