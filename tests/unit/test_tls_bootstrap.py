"""The self-signed bootstrap certificate (elemta_smtp/tls/bootstrap.py)."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from elemta_smtp.cache import live
from elemta_smtp.certs.bundle import dns_names, key_description
from elemta_smtp.tls.bootstrap import ensure_bootstrap, is_bootstrap

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_generated_outside_live_as_ecdsa_p256(tmp_path: Path) -> None:
    """The bootstrap is an ECDSA P-256 self-signed cert for the hostname at <cache>/bootstrap.pem, 0600."""
    cache = tmp_path / "cache"
    path = ensure_bootstrap(cache, "mail.example.com", NOW)
    assert path == cache / "bootstrap.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert live.list_live(cache) == []
    bundle = live.read_bundle(path)
    assert dns_names(bundle.leaf) == ("mail.example.com",)
    assert key_description(bundle.key) == "ECDSA P-256"
    assert is_bootstrap(bundle.leaf)


def test_reused_when_still_good(tmp_path: Path) -> None:
    """A second call returns the same certificate instead of making a new one."""
    cache = tmp_path / "cache"
    first = live.read_bundle(ensure_bootstrap(cache, "mail.example.com", NOW)).leaf.serial_number
    again = live.read_bundle(ensure_bootstrap(cache, "mail.example.com", NOW + timedelta(days=30)))
    assert again.leaf.serial_number == first


def test_regenerated_when_expired_unreadable_or_renamed(tmp_path: Path) -> None:
    """Expired (or nearly), garbage, or for another hostname: a new certificate is made."""
    cache = tmp_path / "cache"
    path = ensure_bootstrap(cache, "mail.example.com", NOW)
    serials = {live.read_bundle(path).leaf.serial_number}
    ensure_bootstrap(cache, "mail.example.com", NOW + timedelta(days=400))
    serials.add(live.read_bundle(path).leaf.serial_number)
    path.write_bytes(path.read_bytes()[:100])
    ensure_bootstrap(cache, "mail.example.com", NOW)
    serials.add(live.read_bundle(path).leaf.serial_number)
    ensure_bootstrap(cache, "other.example.com", NOW)
    bundle = live.read_bundle(path)
    serials.add(bundle.leaf.serial_number)
    assert len(serials) == 4
    assert dns_names(bundle.leaf) == ("other.example.com",)
