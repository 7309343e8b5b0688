"""Warnings about certificate files (elemta_smtp/tls/sources.py): live/ entries that are
skipped, private keys open to group or others. Shared by `elemta cert info` and the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from elemta_smtp.cache import layout, live
from elemta_smtp.config import Config, parse_config
from elemta_smtp.tls.bootstrap import ensure_bootstrap
from elemta_smtp.tls.sources import file_warnings, key_mode_warning, log_file_warnings, skipped_reason
from tests.certs import make_ca, make_leaf, utcnow


@pytest.mark.parametrize(("name", "is_dir", "reason"), [
    pytest.param("mail.example.com.pem", False, None, id="served"),
    pytest.param(".mail.example.com.pem.1a2b3c.tmp", False, None, id="temp-file-of-atomic-write"),
    pytest.param(".tmp", False, None, id="hidden-file-of-manual-install"),
    pytest.param("Mail.Example.com.pem", False, '"Mail.Example.com" is not written in lower case: rename it '
                 "mail.example.com.pem", id="upper-case"),
    pytest.param("mail_example.com.pem", False, '"mail_example.com" is not a DNS name', id="underscore"),
    pytest.param("*.example.com.pem", False, '"*.example.com" is not a DNS name', id="wildcard"),
    pytest.param("mail.example.com.crt", False, "only files named <domain>.pem here are served: rename it, "
                 "such as mail.example.com.pem", id="other-suffix"),
    pytest.param("README", False, "only files named <domain>.pem here are served: rename it", id="no-suffix"),
    pytest.param("mail.example.com", True, "it is a folder", id="certbot-style-folder"),
])
def test_skipped_reason(name: str, is_dir: bool, reason: str | None) -> None:
    """Every live/ entry that is not served says why, except hidden temporary files."""
    found = skipped_reason(name, is_dir)
    assert found == reason if reason is None else (found is not None and found.startswith(reason))


@pytest.mark.parametrize(("mode", "warned"), [
    (0o600, None), (0o400, None), (0o640, "its group can read it (mode 0640)"),
    (0o604, "others can read it (mode 0604)"), (0o644, "its group and others can read it (mode 0644)"),
    (0o620, "its group can write it (mode 0620)"),
], ids=lambda v: oct(v) if isinstance(v, int) else "")
def test_key_mode_warning(mode: int, warned: str | None) -> None:
    """A key file that anyone but its owner can read (or write) is named with its mode and the fix."""
    found = key_mode_warning(Path("/k.pem"), mode)
    if warned is None:
        assert found is None
    else:
        assert found == f"/k.pem holds a private key and {warned}: chmod 600 /k.pem"


def config(tmp_path: Path, hand: bool = False) -> Config:
    extra = (f'[tls]\ncert_file = "{tmp_path / "hand.crt"}"\nkey_file = "{tmp_path / "hand.key"}"\n'
             if hand else "")
    return parse_config(f'[server]\nhostname = "mail.example.com"\npid_file = "{tmp_path / "pid"}"\n'
                        f'{extra}[tls.letsencrypt]\ncache_dir = "{tmp_path / "cache"}"\n')


def test_file_warnings_from_real_files(tmp_path: Path) -> None:
    """Skipped live/ entries and loose key modes of [tls] key_file, live/*.pem and
    bootstrap.pem are all found; a tidy cache gives no warning."""
    cfg = config(tmp_path, hand=True)
    cache = cfg.tls.letsencrypt.cache_dir
    leaf = make_leaf(make_ca("Sub", parent=make_ca()), ["mail.example.com"])
    installed = live.write_certificate(cache, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    boot = ensure_bootstrap(cache, "mail.example.com", utcnow())
    (tmp_path / "hand.crt").write_bytes(leaf.fullchain_pem)
    (tmp_path / "hand.key").write_bytes(leaf.key_pem)
    (tmp_path / "hand.key").chmod(0o600)
    assert file_warnings(cfg) == []
    for path in (tmp_path / "hand.key", installed, boot):
        path.chmod(0o644)
    (layout.live_dir(cache) / "mail.example.com").mkdir()
    (layout.live_dir(cache) / "Other.example.com.pem").write_bytes(b"")
    (layout.live_dir(cache) / "gone.example.com.pem").symlink_to(tmp_path / "nowhere")
    found = file_warnings(cfg)
    live_dir = layout.live_dir(cache)
    assert [w.split(" ", 1)[0] for w in found] == [
        str(live_dir / "Other.example.com.pem"), str(live_dir / "gone.example.com.pem"),
        str(live_dir / "mail.example.com"), str(tmp_path / "hand.key"), str(installed), str(boot)]
    assert "broken symbolic link" in found[1]


def test_file_warnings_without_cache(tmp_path: Path) -> None:
    """No cache folder yet (first start): no warning, no error."""
    assert file_warnings(config(tmp_path)) == []


def test_log_file_warnings_logs_one_line_each(tmp_path: Path) -> None:
    """The daemon's reload logs each warning as one line with the sentence in a named field."""
    from typing import cast

    from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent

    cfg = config(tmp_path)
    layout.ensure_layout(cfg.tls.letsencrypt.cache_dir)
    (layout.live_dir(cfg.tls.letsencrypt.cache_dir) / "Mail.example.com.pem").write_bytes(b"")
    events: list[dict[str, object]] = []
    log_file_warnings(cfg, Logger(observer=cast(ILogObserver, events.append)))
    (event,) = events
    assert event["log_level"] == LogLevel.warn
    assert formatEvent(event) == f"TLS certificate file: {event['warning']}"
    assert '"Mail.example.com" is not written in lower case' in str(event["warning"])
