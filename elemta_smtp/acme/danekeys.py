"""The keys of the certificates elemta keeps, as TLSA values, for ``elemta dane ...`` and
``elemta dns records``: the key served (decided as ``elemta cert info`` decides it: the
slot's live/ file, or ``[tls] cert_file``), the next key of a staged rollover and the
rollover record; files only (no Twisted, no DNS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from elemta_smtp.acme.dane import key_value, mx_hosts
from elemta_smtp.acme.slots import Slot, slots
from elemta_smtp.cache import dane as store
from elemta_smtp.cache.layout import next_key_path
from elemta_smtp.cache.lineages import Lineage
from elemta_smtp.config import Config
from elemta_smtp.tls.report import CertInfo, certificate_report, own_name, variant_of


def _slot_info(config: Config, slot: Slot, infos: Sequence[CertInfo]) -> CertInfo | None:
    """The certificate file that stands for ``slot``: its live/ file, or for the first
    certificate, ``[tls] cert_file`` (a certificate managed by hand) when no live/ file of the
    domain is served."""
    domain = config.tls.letsencrypt.domain
    own = [i for i in infos if i.kind == "live" and own_name(i) == domain
           and variant_of(i) == slot.variant]
    hand = [i for i in infos if i.kind == "hand"] if not slot.variant else []
    for info in (*own, *hand):
        if info.served and info.details is not None:
            return info
    candidates = own or hand
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class SlotKeys:
    """One certificate's keys as TLSA values, and the MX names their records belong to."""

    slot: Slot
    hosts: tuple[str, ...]
    current: str  # "" when no certificate is served for the slot
    next: str  # "" when no rollover is under way
    rollover: store.Rollover | None
    path: Path | None = None  # the file of the certificate (served or not)
    key: str = ""  # its key as served ("ECDSA P-256", "RSA 2048"); "" when none
    problem: str = ""  # why the slot's certificate file is not served


def slot_keys(config: Config, slot: Slot, infos: Sequence[CertInfo] | None = None) -> SlotKeys:
    """The keys of ``slot``: the one served, as ``elemta cert info`` decides what is served
    (valid, not expired, the key matching), the next one and the rollover record."""
    le = config.tls.letsencrypt
    if infos is None:
        infos = certificate_report(config, datetime.now(timezone.utc))
    info = _slot_info(config, slot, infos)
    served = info is not None and info.served and info.details is not None
    details = info.details if info is not None else None
    names = details.names if served and details is not None else le.names
    current = f"3 1 1 {details.spki_sha256}" if served and details is not None else ""
    next_pem = store.read_next_key(le.cache_dir, slot.domain, slot.variant)
    following = ""
    if next_pem is not None:
        key = store.load_key(next_pem, next_key_path(le.cache_dir, slot.domain, slot.variant))
        following = key_value(key.public_key())
    problem = "" if served or info is None else (info.problem or "not served")
    return SlotKeys(slot, tuple(mx_hosts(config, names)), current, following,
                    store.read_rollover(le.cache_dir, slot.domain, slot.variant),
                    info.source if info is not None else None,
                    details.key if served and details is not None else "", problem)


def all_slot_keys(config: Config, infos: Sequence[CertInfo] | None = None) -> list[SlotKeys]:
    """``slot_keys`` of every certificate ``config`` keeps, from one reading of the files
    (``infos``: the ``certificate_report`` the caller has already made)."""
    if infos is None:
        infos = certificate_report(config, datetime.now(timezone.utc))
    return [slot_keys(config, slot, infos) for slot in slots(config)]


def reuse_warning(lineage: Lineage) -> str | None:
    """When certbot's renewal configuration does not keep the key yet, a plain ``certbot
    renew`` (outside elemta) would make a new one."""
    try:
        text = lineage.renewal_conf.read_text(encoding="utf-8")
    except OSError:
        return None
    if any(line.replace(" ", "").lower() == "reuse_key=true" for line in text.splitlines()):
        return None
    return (f"certbot's {lineage.renewal_conf} does not keep the key yet (no reuse_key = True): "
            "a plain `certbot renew` would make a new key; run `elemta cert renew` once "
            "(it stores --reuse-key there)")


