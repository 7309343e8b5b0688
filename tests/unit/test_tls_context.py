"""The reloadable SNI-aware server TLS (elemta_smtp/tls/context.py), driven through
in-memory handshakes: no sockets, no reactor, a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent

from elemta_smtp.cache import layout, live
from elemta_smtp.config import Config, parse_config
from elemta_smtp.tls.context import ServerTLS
from tests.certs import CA, Leaf, make_ca, make_leaf, memory_handshake

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
DOMAIN = "mail.example.com"


def config(tmp_path: Path, hand: bool = False, domain: str = DOMAIN) -> Config:
    lines = ['[server]', 'hostname = "mail.example.com"', '[tls.letsencrypt]',
             f'cache_dir = "{tmp_path / "cache"}"', f'domain = "{domain}"']
    if hand:
        lines[2:2] = ['[tls]', f'cert_file = "{tmp_path / "hand-cert.pem"}"',
                      f'key_file = "{tmp_path / "hand-key.pem"}"']
    return parse_config("\n".join(lines))


class Harness:
    """A ServerTLS over a cache folder, with its log lines captured."""

    def __init__(self, tmp_path: Path, ca: CA, hand: bool = False) -> None:
        self.cfg = config(tmp_path, hand)
        self.cache = self.cfg.tls.letsencrypt.cache_dir
        self.ca = ca
        self.events: list[LogEvent] = []
        self.now = NOW
        self.tls = ServerTLS(self.cfg, lambda: self.now,
                             log=Logger(observer=cast(ILogObserver, self.events.append)))

    def leaf(self, *names: str, days_after: int = 60) -> Leaf:
        return make_leaf(self.ca, list(names) or [DOMAIN], not_before=NOW - timedelta(days=1),
                         not_after=NOW + timedelta(days=days_after))

    def install(self, leaf: Leaf, name: str = DOMAIN) -> None:
        live.write_certificate(self.cache, name, leaf.key_pem, leaf.fullchain_pem)

    def serial(self, server_name: str | None = DOMAIN) -> int:
        return memory_handshake(self.tls.serverConnectionForTLS(object()), server_name).serial

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def errors(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"].name in ("error", "critical")]


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca(not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650))


@pytest.fixture
def h(tmp_path: Path, ca: CA) -> Harness:
    return Harness(tmp_path, ca)


def test_provides_the_twisted_interface(h: Harness) -> None:
    """ServerTLS declares IOpenSSLServerConnectionCreator, so Twisted asks it on every handshake."""
    assert IOpenSSLServerConnectionCreator.providedBy(h.tls)


def test_serves_live_certificate_and_logs_it(h: Harness) -> None:
    """A valid live/<domain>.pem is served; the log names its serial (hex), names and not-after."""
    leaf = h.leaf()
    h.install(leaf)
    assert h.tls.reload() is True
    assert h.serial() == leaf.serial
    loaded = [line for line in h.lines() if "loaded" in line]
    assert len(loaded) == 1
    assert format(leaf.serial, "x") in loaded[0]
    assert DOMAIN in loaded[0]
    assert "2030-07-31" in loaded[0]


def test_tls_policy(h: Harness) -> None:
    """TLS 1.1 is refused; a default client gets TLS 1.3; a TLS 1.2 client gets ECDHE + AEAD."""
    h.install(h.leaf())
    h.tls.reload()
    assert memory_handshake(h.tls.serverConnectionForTLS(object())).protocol == "TLSv1.3"
    client12 = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client12.set_max_proto_version(SSL.TLS1_2_VERSION)
    shake = memory_handshake(h.tls.serverConnectionForTLS(object()), DOMAIN, client12)
    assert shake.protocol == "TLSv1.2"
    assert shake.cipher is not None
    assert shake.cipher.startswith("ECDHE-") and ("GCM" in shake.cipher or "CHACHA20" in shake.cipher)
    client11 = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client11.set_max_proto_version(SSL.TLS1_1_VERSION)
    with pytest.raises(SSL.Error):
        memory_handshake(h.tls.serverConnectionForTLS(object()), DOMAIN, client11)


def test_tls13_prefers_aes128_gcm_and_keeps_the_others(h: Harness) -> None:
    """A TLS 1.3 client offering every suite gets AES-128-GCM; one offering only AES-256 or
    ChaCha20 still connects with that suite."""
    h.install(h.leaf())
    h.tls.reload()
    assert memory_handshake(h.tls.serverConnectionForTLS(object())).cipher == "TLS_AES_128_GCM_SHA256"
    for suite in ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
        client = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client.set_tls13_ciphersuites(suite.encode("ascii"))
        assert memory_handshake(h.tls.serverConnectionForTLS(object()), DOMAIN, client).cipher == suite


def test_sni_selects_among_live_certificates(h: Harness) -> None:
    """Each live/ file is served for its names; no SNI or an unknown name gets the domain's."""
    main, other, wild = h.leaf(), h.leaf("other.example.net"), h.leaf("example.org", "*.example.org")
    h.install(main)
    h.install(other, "other.example.net")
    h.install(wild, "example.org")
    h.tls.reload()
    assert h.serial("other.example.net") == other.serial
    assert h.serial("smtp.example.org") == wild.serial
    assert h.serial("OTHER.example.NET") == other.serial
    assert h.serial(None) == main.serial
    assert h.serial("unknown.example.com") == main.serial
    served = h.tls.served()
    assert [s.is_default for s in served].count(True) == 1
    assert next(s for s in served if s.is_default).serial == main.serial


def test_good_reload_serves_new_serial(h: Harness) -> None:
    """Replacing live/<domain>.pem and reloading serves the new serial; reload reports a change."""
    first, second = h.leaf(), h.leaf()
    h.install(first)
    h.tls.reload()
    assert h.serial() == first.serial
    h.install(second)
    assert h.tls.reload() is True
    assert h.serial() == second.serial


def test_reload_without_change_reports_none(h: Harness) -> None:
    """A reload with nothing new returns False and logs nothing."""
    h.install(h.leaf())
    h.tls.reload()
    before = len(h.events)
    assert h.tls.reload() is False
    assert len(h.events) == before


def test_open_connection_keeps_its_certificate(h: Harness) -> None:
    """A connection created before a reload completes its handshake with the old certificate
    when the client sends no SNI... and with the new one when SNI switches it: contexts are per handshake."""
    first, second = h.leaf(), h.leaf()
    h.install(first)
    h.tls.reload()
    done = h.tls.serverConnectionForTLS(object())
    assert memory_handshake(done, DOMAIN).serial == first.serial
    h.install(second)
    h.tls.reload()
    assert done.get_certificate(as_cryptography=True).serial_number == first.serial  # type: ignore[call-arg, union-attr, unused-ignore]
    assert h.serial() == second.serial


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-150])


def _leaf_at(h: Harness, days_before: int, days_after: int) -> bytes:
    return make_leaf(h.ca, [DOMAIN], not_before=NOW - timedelta(days=days_before),
                     not_after=NOW + timedelta(days=days_after)).combined_pem


BAD_KINDS: dict[str, Callable[[Harness, Path], object]] = {
    "garbage": lambda h, path: path.write_bytes(b"garbage\n"),
    "truncated": lambda h, path: _truncate(path),
    "mismatched-key": lambda h, path: path.write_bytes(h.leaf().key_pem + h.leaf().fullchain_pem),
    "expired": lambda h, path: path.write_bytes(_leaf_at(h, 90, -1)),
    "not-yet-valid": lambda h, path: path.write_bytes(_leaf_at(h, -1, 90)),
    "wrong-name": lambda h, path: path.write_bytes(h.leaf("other.example.com").combined_pem),
    "chain-out-of-order": lambda h, path: path.write_bytes(
        h.leaf().key_pem + make_ca("Other CA").pem + h.leaf().cert_pem),
    "empty": lambda h, path: path.write_bytes(b""),
}


@pytest.mark.parametrize("kind", list(BAD_KINDS), ids=list(BAD_KINDS))
def test_bad_reload_keeps_old_serial_and_logs_one_line(h: Harness, kind: str) -> None:
    """A bad replacement keeps the previous certificate and logs exactly one line naming the file."""
    good = h.leaf()
    h.install(good)
    h.tls.reload()
    path = layout.certificate_path(h.cache, DOMAIN)
    BAD_KINDS[kind](h, path)
    before = len(h.events)
    assert h.tls.reload() is False
    assert h.serial() == good.serial
    new = [formatEvent(e) for e in h.events[before:]]
    assert len(new) == 1, new
    assert str(path) in new[0]
    assert "still serving serial " + format(good.serial, "x") in new[0]


def test_bad_file_at_start_falls_back_to_bootstrap(h: Harness) -> None:
    """With only a bad live file at start, the bootstrap is served (never nothing) and both are logged."""
    layout.ensure_layout(h.cache)
    layout.certificate_path(h.cache, DOMAIN).write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA")
    h.tls.reload()
    served = h.tls.served()
    assert [s.is_bootstrap for s in served] == [True]
    assert h.serial() == served[0].serial
    assert any("rejected, not served" in line and "cut short" in line for line in h.errors())
    assert any("SELF-SIGNED BOOTSTRAP" in line for line in h.lines())


def test_bootstrap_when_cache_empty_then_replaced(h: Harness) -> None:
    """An empty cache serves the bootstrap (loud warning); a later live cert replaces it on reload."""
    h.tls.reload()
    (boot,) = h.tls.served()
    assert boot.is_bootstrap
    assert boot.source == h.cache / "bootstrap.pem"
    assert boot.names == (DOMAIN,)
    assert sum("NOT publicly trusted" in line for line in h.lines()) == 1
    leaf = h.leaf()
    h.install(leaf)
    assert h.tls.reload() is True
    assert [s.serial for s in h.tls.served()] == [leaf.serial]
    assert h.serial(None) == leaf.serial


def test_removed_live_file_stops_being_served(h: Harness) -> None:
    """Deleting a live/ file (not the only one) drops it on reload with one log line."""
    main, other = h.leaf(), h.leaf("other.example.net")
    h.install(main)
    h.install(other, "other.example.net")
    h.tls.reload()
    layout.certificate_path(h.cache, "other.example.net").unlink()
    assert h.tls.reload() is True
    assert [s.serial for s in h.tls.served()] == [main.serial]
    assert "is gone" in h.lines()[-1]


def test_expiry_while_running_keeps_serving(h: Harness) -> None:
    """A served certificate that expires is kept (with one error line per reload) rather than dropped."""
    leaf = h.leaf(days_after=10)
    h.install(leaf)
    h.tls.reload()
    h.now = NOW + timedelta(days=11)
    assert h.tls.reload() is False
    assert h.serial() == leaf.serial
    assert "expired" in h.errors()[-1]


def test_hand_certificate_is_served_and_preferred(tmp_path: Path, ca: CA) -> None:
    """[tls] cert_file/key_file is served, wins its names and the default over live/ files."""
    h = Harness(tmp_path, ca, hand=True)
    hand, live = h.leaf(), h.leaf()
    (tmp_path / "hand-cert.pem").write_bytes(hand.fullchain_pem)
    (tmp_path / "hand-key.pem").write_bytes(hand.key_pem)
    h.install(live)
    h.tls.reload()
    assert h.serial() == hand.serial
    assert h.serial(None) == hand.serial
    assert {s.serial for s in h.tls.served()} == {hand.serial, live.serial}


def test_hand_certificate_missing_keeps_previous(tmp_path: Path, ca: CA) -> None:
    """If the hand-managed key file disappears, the previous hand certificate stays served."""
    h = Harness(tmp_path, ca, hand=True)
    hand = h.leaf()
    (tmp_path / "hand-cert.pem").write_bytes(hand.fullchain_pem)
    (tmp_path / "hand-key.pem").write_bytes(hand.key_pem)
    h.tls.reload()
    (tmp_path / "hand-key.pem").unlink()
    assert h.tls.reload() is False
    assert h.serial() == hand.serial
    assert "hand-key.pem does not exist" in h.errors()[-1]
    assert "hand-cert.pem" in h.errors()[-1]


def test_connection_before_reload_is_created_lazily(h: Harness) -> None:
    """serverConnectionForTLS before any reload() loads the sources itself instead of failing."""
    leaf = h.leaf()
    h.install(leaf)
    assert h.serial() == leaf.serial


def test_bootstrap_warning_says_a_certificate_is_on_its_way(tmp_path: Path) -> None:
    """With [tls.letsencrypt] enabled the bootstrap warning says elemta is obtaining one,
    instead of telling the admin to enable what is already enabled."""
    cfg = parse_config("\n".join([
        '[server]', 'hostname = "mail.example.com"', '[tls.letsencrypt]', 'enabled = true',
        'email = "admin@example.com"', f'cache_dir = "{tmp_path / "cache"}"']))
    events: list[LogEvent] = []
    ServerTLS(cfg, lambda: NOW, log=Logger(observer=cast(ILogObserver, events.append))).reload()
    (warning,) = [formatEvent(e) for e in events if "BOOTSTRAP" in formatEvent(e)]
    assert "obtaining a certificate for mail.example.com" in warning
    assert "Enable [tls.letsencrypt]" not in warning


def test_served_facts_come_from_memory_not_the_file(h: Harness) -> None:
    """served() reports the certificate in use (not_before included) even after the file on
    disk was replaced by a broken one, so renewal decisions use what clients see."""
    leaf = h.leaf()
    h.install(leaf)
    h.tls.reload()
    layout.certificate_path(h.cache, DOMAIN).write_bytes(b"garbage")
    h.tls.reload()
    (served,) = h.tls.served()
    assert served.serial == leaf.serial
    assert served.not_before == leaf.cert.not_valid_before_utc
    assert served.not_after == leaf.cert.not_valid_after_utc
