"""Lineage records (which certbot folders a cached certificate comes from) and the
decision whether a user can renew a lineage, on permission bits passed in."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from elemta_smtp.cache import lineages
from elemta_smtp.cache.lineages import Lineage, User

ELEMTA = User(uid=1000, gids=frozenset({1000}), name="elemta")
ROOT = User(uid=0, gids=frozenset({0}), name="root")


def info(mode: int, uid: int = 0, gid: int = 0, kind: int = stat.S_IFDIR) -> os.stat_result:
    return os.stat_result((kind | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("mode", "uid", "gid", "want", "allowed"), [
    pytest.param(0o755, 0, 0, 3, False, id="root-dir-0755-no-write-for-others"),
    pytest.param(0o700, 1000, 1000, 3, True, id="own-dir"),
    pytest.param(0o770, 0, 1000, 3, True, id="group-writable-dir"),
    pytest.param(0o750, 0, 1000, 3, False, id="group-read-only-dir"),
    pytest.param(0o757, 0, 0, 3, True, id="world-writable-dir"),
    pytest.param(0o400, 1000, 1000, 4, True, id="own-read-only-file"),
    pytest.param(0o600, 0, 0, 4, False, id="roots-private-file"),
])
def test_allows_reads_owner_group_other_bits(mode: int, uid: int, gid: int, want: int,
                                             allowed: bool) -> None:
    """The owner's, else the group's, else the others' bits decide (like the kernel)."""
    assert lineages.allows(info(mode, uid, gid), ELEMTA, want) is allowed


def test_root_may_write_anything() -> None:
    """Root is never blocked by permission bits."""
    assert lineages.allows(info(0o500, 1000, 1000), ROOT, 3)


def test_unwritable_names_the_folder_that_blocks() -> None:
    """A missing folder is judged by its nearest existing parent; a parent that cannot be
    passed through blocks too."""
    tree = {Path("/"): info(0o755), Path("/etc"): info(0o755),
            Path("/etc/letsencrypt"): info(0o755),
            Path("/var"): info(0o755), Path("/var/lib"): info(0o755),
            Path("/var/lib/elemta"): info(0o700, 1000, 1000),
            Path("/srv"): info(0o700)}

    def fake_stat(path: Path) -> os.stat_result:
        try:
            return tree[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    ok = [Path("/var/lib/elemta/certbot/config"), Path("/var/lib/elemta/certbot/logs")]
    assert lineages.unwritable(ok, ELEMTA, fake_stat) is None
    assert lineages.unwritable([*ok, Path("/etc/letsencrypt/archive/x")], ELEMTA, fake_stat) \
        == Path("/etc/letsencrypt")
    tree[Path("/srv/certbot")] = info(0o777, 1000, 1000)
    assert lineages.unwritable([Path("/srv/certbot")], ELEMTA, fake_stat) == Path("/srv")


def test_record_round_trip_and_bad_records(tmp_path: Path) -> None:
    """A written record reads back; garbage, relative folders or a missing record read as None."""
    lineage = Lineage("mail.example.com-0001", Path("/etc/letsencrypt"),
                      Path("/var/lib/letsencrypt"), Path("/var/log/letsencrypt"))
    path = lineages.write_record(tmp_path, "Mail.Example.COM", lineage)
    assert path == tmp_path / "certbot" / "lineages" / "mail.example.com.json"
    assert lineages.read_record(tmp_path, "mail.example.com") == lineage
    assert lineages.read_record(tmp_path, "other.example.com") is None
    for bad in (b"{", b"[]", b'{"cert_name": "x", "config_dir": "rel", "work_dir": "/w", '
                b'"logs_dir": "/l"}', b'{"cert_name": "../x", "config_dir": "/c", '
                b'"work_dir": "/w", "logs_dir": "/l"}'):
        path.write_bytes(bad)
        assert lineages.read_record(tmp_path, "mail.example.com") is None
    with pytest.raises(lineages.LineageError):
        lineages.record_path(tmp_path, "../../etc/passwd")


def test_lineage_for_falls_back_to_elemtas_own(tmp_path: Path) -> None:
    """No record for any of the names: elemta's own certbot folders and the domain's name."""
    found = lineages.lineage_for(tmp_path, ["mail.example.com"], "mail.example.com")
    assert found == lineages.own_lineage(tmp_path, "mail.example.com")
    assert found.config_dir == tmp_path / "certbot" / "config" and not found.recorded
    other = Lineage("mx", Path("/etc/letsencrypt"), Path("/w"), Path("/l"))
    lineages.write_record(tmp_path, "smtp.example.com", other)
    assert lineages.lineage_for(tmp_path, ["mail.example.com", "smtp.example.com"], "x") == other


def test_blocker_for_a_deleted_lineage(tmp_path: Path) -> None:
    """A recorded lineage whose renewal configuration is gone cannot be renewed by anyone."""
    lineage = Lineage("mail.example.com", tmp_path / "le", tmp_path / "w", tmp_path / "l")
    text = lineages.renewal_blocker(lineage, ELEMTA, cache_dir=tmp_path / "cache",
                                    domain="mail.example.com", config_path=Path("/e.toml"))
    assert text is not None
    assert f"{lineage.renewal_conf} does not exist any more" in text
    assert "--elemta-config /e.toml" in text


def test_no_blocker_before_elemta_has_a_lineage(tmp_path: Path) -> None:
    """elemta's own (unrecorded) lineage that does not exist yet is not a problem: the daemon
    obtains it first."""
    lineage = lineages.own_lineage(tmp_path, "mail.example.com")
    assert lineages.renewal_blocker(lineage, ELEMTA, cache_dir=tmp_path, domain="m",
                                    config_path=None) is None


def test_no_blocker_for_own_writable_folders(tmp_path: Path) -> None:
    """The current user's own folders with a renewal configuration: renewable."""
    lineage = lineages.own_lineage(tmp_path, "mail.example.com")
    lineage.renewal_conf.parent.mkdir(parents=True)
    lineage.renewal_conf.write_text("version = 5\n")
    me = lineages.current_user()
    assert lineages.renewal_blocker(lineage, me, cache_dir=tmp_path, domain="m",
                                    config_path=None) is None
