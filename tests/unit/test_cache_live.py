"""The certificate cache layout, its certificates and the atomic writer (elemta_smtp/cache/)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from elemta_smtp.cache import layout, live
from elemta_smtp.errors import CacheError, ElemtaError, InvalidCertificate, InvalidName
from tests.certs import make_ca, make_leaf


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_layout_modes(cache: Path) -> None:
    """ensure_layout makes cache_dir and live/ private (0700) and the webroot readable (0755)."""
    layout.ensure_layout(cache)
    assert mode(cache) == 0o700
    assert mode(layout.live_dir(cache)) == 0o700
    assert mode(cache / "certbot") == 0o700
    assert layout.challenge_dir(cache) == cache / "webroot" / ".well-known" / "acme-challenge"
    for folder in (layout.webroot(cache), layout.webroot(cache) / ".well-known", layout.challenge_dir(cache)):
        assert mode(folder) == 0o755


def test_layout_tightens_loose_modes(cache: Path) -> None:
    """ensure_layout is idempotent and puts back 0700 on a cache folder someone opened up."""
    layout.ensure_layout(cache)
    os.chmod(layout.live_dir(cache), 0o755)
    layout.ensure_layout(cache)
    assert mode(layout.live_dir(cache)) == 0o700


def test_write_is_atomic_private_and_readable_back(cache: Path) -> None:
    """write_certificate installs key+chain at live/<name>.pem, 0600, with no temp file left."""
    ca = make_ca()
    leaf = make_leaf(make_ca("Sub", parent=ca), ["mail.example.com"])
    path = live.write_certificate(cache, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    assert path == cache / "live" / "mail.example.com.pem"
    assert mode(path) == 0o600
    assert os.listdir(layout.live_dir(cache)) == ["mail.example.com.pem"]
    bundle = live.read_bundle(path)
    assert bundle.leaf.serial_number == leaf.serial
    assert len(bundle.chain) == 1
    assert live.list_live(cache) == [path]


def test_write_replaces_existing_file(cache: Path) -> None:
    """A second write replaces the file (a new inode via rename), keeping 0600."""
    ca = make_ca()
    first, second = make_leaf(ca, ["mail.example.com"]), make_leaf(ca, ["mail.example.com"])
    path = live.write_certificate(cache, "mail.example.com", first.key_pem, first.fullchain_pem)
    inode = path.stat().st_ino
    live.write_certificate(cache, "mail.example.com", second.key_pem, second.fullchain_pem)
    assert live.read_bundle(path).leaf.serial_number == second.serial
    assert path.stat().st_ino != inode
    assert mode(path) == 0o600


def test_write_ignores_umask(cache: Path) -> None:
    """Even with a permissive umask the file is 0600 and the folders 0700."""
    leaf = make_leaf(make_ca(), ["mail.example.com"])
    old = os.umask(0)
    try:
        path = live.write_certificate(cache, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    finally:
        os.umask(old)
    assert (mode(path), mode(cache), mode(path.parent)) == (0o600, 0o700, 0o700)


def test_mismatched_key_is_not_written(cache: Path) -> None:
    """A key that does not match the leaf raises InvalidCertificate and leaves live/ untouched."""
    ca = make_ca()
    good = make_leaf(ca, ["mail.example.com"])
    path = live.write_certificate(cache, "mail.example.com", good.key_pem, good.fullchain_pem)
    other = make_leaf(ca, ["mail.example.com"])
    with pytest.raises(InvalidCertificate) as info:
        live.write_certificate(cache, "mail.example.com", other.key_pem, good.fullchain_pem)
    assert "does not belong" in info.value.reason
    assert info.value.path == path
    assert live.read_bundle(path).leaf.serial_number == good.serial
    assert os.listdir(layout.live_dir(cache)) == ["mail.example.com.pem"]


def test_garbage_is_not_written(cache: Path) -> None:
    """Garbage instead of PEM raises InvalidCertificate (a StoreError, an ElemtaError) and writes nothing."""
    with pytest.raises(InvalidCertificate) as info:
        live.write_certificate(cache, "mail.example.com", b"not a key", b"not a cert")
    assert isinstance(info.value, CacheError)
    assert isinstance(info.value, ElemtaError)
    assert not (cache / "live" / "mail.example.com.pem").exists()


def test_failed_write_leaves_no_temp_file(cache: Path) -> None:
    """When the rename fails (target is a folder) the temp file is removed and StoreError explains."""
    leaf = make_leaf(make_ca(), ["mail.example.com"])
    layout.ensure_layout(cache)
    (layout.live_dir(cache) / "mail.example.com.pem").mkdir()
    with pytest.raises(CacheError) as info:
        live.write_certificate(cache, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    assert "cannot write" in str(info.value)
    assert os.listdir(layout.live_dir(cache)) == ["mail.example.com.pem"]


@pytest.mark.parametrize("name", [
    pytest.param("../etc/passwd", id="traversal"),
    pytest.param("a/b", id="slash"),
    pytest.param("*.example.com", id="wildcard"),
    pytest.param("", id="empty"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("exa mple.com", id="space"),
    pytest.param("-bad.example.com", id="leading-hyphen"),
    pytest.param("a" * 64 + ".com", id="label-too-long"),
])
def test_bad_names_are_refused(cache: Path, name: str) -> None:
    """certificate_path refuses anything but a DNS name, so no file can land outside live/."""
    with pytest.raises(InvalidName) as info:
        layout.certificate_path(cache, name)
    assert "not a DNS name" in str(info.value)


def test_names_are_normalized(cache: Path) -> None:
    """Upper case and a trailing dot name the same file."""
    assert layout.certificate_path(cache, "Mail.Example.COM.") == cache / "live" / "mail.example.com.pem"


def test_list_live_skips_temp_and_foreign_files(cache: Path) -> None:
    """list_live returns only <dns-name>.pem files, sorted, not temp files or other names."""
    layout.ensure_layout(cache)
    folder = layout.live_dir(cache)
    for name in ("b.example.com.pem", "a.example.com.pem", ".a.example.com.pem.1234.tmp",
                 "README", "bad name.pem"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in live.list_live(cache)] == ["a.example.com.pem", "b.example.com.pem"]


def test_list_live_without_cache_is_empty(cache: Path) -> None:
    """A cache that does not exist yet lists nothing instead of failing."""
    assert live.list_live(cache) == []


def test_read_missing_file_names_it(cache: Path) -> None:
    """Reading a missing file raises InvalidCertificate with the path and 'does not exist'."""
    path = cache / "live" / "nope.example.com.pem"
    with pytest.raises(InvalidCertificate) as info:
        live.read_bundle(path)
    assert info.value.path == path
    assert "does not exist" in info.value.reason


def test_read_separate_key_file(tmp_path: Path) -> None:
    """read_bundle(cert, key_path) joins a hand-managed certificate and key file."""
    leaf = make_leaf(make_ca(), ["mail.example.com"])
    (tmp_path / "cert.pem").write_bytes(leaf.fullchain_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    bundle = live.read_bundle(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert bundle.leaf.serial_number == leaf.serial
    assert bundle.path == tmp_path / "cert.pem"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_root_writes_files_the_daemon_user_owns(cache: Path) -> None:
    """`sudo certbot ... -i elemta` leaves live/<name>.pem (and new folders) owned by the
    cache's owner, so a daemon running as that user can read it; without this it could not."""
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)  # the daemon's user (nobody here)
    leaf = make_leaf(make_ca(), ["mail.example.com"])
    path = live.write_certificate(cache, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    for item in (path, layout.live_dir(cache), layout.challenge_dir(cache), cache / "certbot"):
        assert (item.stat().st_uid, item.stat().st_gid) == (65534, 65534), item
    assert mode(path) == 0o600
