"""The keys of the certificates elemta keeps, as TLSA values, for ``elemta dane ...`` and
``elemta dns records``: the key served (from live/), the next key of a staged rollover and
the rollover record; files only (no Twisted, no DNS)."""

from __future__ import annotations

from dataclasses import dataclass

from elemta_smtp.acme.dane import key_value, mx_hosts
from elemta_smtp.acme.slots import Slot
from elemta_smtp.cache import dane as store
from elemta_smtp.cache import live
from elemta_smtp.cache.layout import next_key_path
from elemta_smtp.cache.lineages import Lineage
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError


def installed(config: Config, slot: Slot) -> live.Installed | None:
    """The certificate in the slot's live/ file; None when there is none or it is unreadable."""
    try:
        return live.read_installed(slot.live_path(config.tls.letsencrypt.cache_dir))
    except (CacheError, OSError):
        return None


@dataclass(frozen=True)
class SlotKeys:
    """One certificate's keys as TLSA values, and the MX names their records belong to."""

    slot: Slot
    hosts: tuple[str, ...]
    current: str  # "" when no certificate is served yet
    next: str  # "" when no rollover is under way
    rollover: store.Rollover | None


def slot_keys(config: Config, slot: Slot) -> SlotKeys:
    le = config.tls.letsencrypt
    served = installed(config, slot)
    names = served.names if served else le.names
    current = f"3 1 1 {served.spki_sha256}" if served else ""
    next_pem = store.read_next_key(le.cache_dir, slot.domain, slot.variant)
    following = ""
    if next_pem is not None:
        key = store.load_key(next_pem, next_key_path(le.cache_dir, slot.domain, slot.variant))
        following = key_value(key.public_key())
    return SlotKeys(slot, tuple(mx_hosts(config, names)), current, following,
                    store.read_rollover(le.cache_dir, slot.domain, slot.variant))


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


