"""DANE building blocks, pure or on files: which TLSA records match a certificate, the cache
names of second certificates and next keys, the next key swapped into certbot's lineage
and put back whatever happens, the [tls.dane] settings, and the key options of a renewal."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from twisted.logger import capturedLogs, formatEvent

from elemta_smtp.acme import rollover
from elemta_smtp.acme.attempts import RenewalAccess
from elemta_smtp.acme.dane import check_names, key_value, matches, mismatch_sentence
from elemta_smtp.acme.rollover import RolloverError, next_key_in_lineage, put_back
from elemta_smtp.acme.runner import key_change_args
from elemta_smtp.acme.slots import slots
from elemta_smtp.cache import dane as store
from elemta_smtp.cache.layout import certificate_path, live_name, next_key_path, swapped_key_path
from elemta_smtp.cache.lineages import current_user, own_lineage
from elemta_smtp.config import ConfigError, parse_config
from tests.certs import make_ca, make_leaf


def _spki(cert: object) -> bytes:
    return cert.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_tlsa_matching() -> None:
    """3 1 1 and 3 0 1 match the leaf, 2 x x a chain certificate; PKIX usages, other keys and
    malformed values match nothing."""
    ca = make_ca()
    leaf = make_leaf(ca, ["mail.example.com"])
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    assert matches(f"3 1 1 {hashlib.sha256(_spki(leaf.cert)).hexdigest()}", leaf.cert)
    assert matches(key_value(leaf.cert.public_key()), leaf.cert)
    assert matches(f"3 0 1 {hashlib.sha256(der).hexdigest()}", leaf.cert)
    assert matches(f"3 1 2 {hashlib.sha512(_spki(leaf.cert)).hexdigest()}", leaf.cert)
    assert matches(f"2 1 1 {hashlib.sha256(_spki(ca.cert)).hexdigest()}", leaf.cert, [ca.cert])
    assert not matches(f"1 1 1 {hashlib.sha256(_spki(leaf.cert)).hexdigest()}", leaf.cert)
    other = make_leaf(ca, ["mail.example.com"])
    assert not matches(key_value(other.cert.public_key()), leaf.cert)
    assert not matches("3 1 1 zz", leaf.cert)
    assert not matches("3 1", leaf.cert)


def test_check_names_and_sentence() -> None:
    """Records published and none matching is a mismatch whose sentence names the record to
    publish; no record, or a failed lookup, is not a mismatch."""
    ca = make_ca()
    leaf = make_leaf(ca, ["mail.example.com"])
    served = key_value(leaf.cert.public_key())
    checks = check_names({"mail.example.com": (("3 1 1 " + "ab" * 32,), None),
                          "mx2.example.com": ((), None),
                          "mx3.example.com": ((), "timed out")}, leaf.cert)
    assert [c.mismatch for c in checks] == [True, False, False]
    sentence = mismatch_sentence(checks, served)
    assert f"_25._tcp.mail.example.com. IN TLSA {served}" in sentence
    assert "mx2" not in sentence


def test_live_names_of_second_certificates() -> None:
    """live/<name>.rsa.pem is the RSA certificate of <name>; other names are plain."""
    cache = Path("/c")
    assert certificate_path(cache, "mail.example.com", "rsa").name == "mail.example.com.rsa.pem"
    assert live_name("mail.example.com.rsa.pem") == ("mail.example.com", "rsa")
    assert live_name("mail.example.com.pem") == ("mail.example.com", "")
    assert live_name("rsa.example.pem") == ("rsa.example", "")
    assert live_name("notes.txt") is None
    with pytest.raises(ValueError, match="unknown certificate variant"):
        certificate_path(cache, "mail.example.com", "dsa")
    assert next_key_path(cache, "mail.example.com", "rsa").name == \
        "mail.example.com.rsa.next-key.pem"


def test_next_key_stored_private(tmp_path: Path) -> None:
    """The next key is written 0600 and read back; its type is known; removing it ends it."""
    pem = store.make_key("rsa")
    path = store.write_next_key(tmp_path, "mail.example.com", "", pem)
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.read_next_key(tmp_path, "mail.example.com") == pem
    assert store.key_type_of(pem) == "rsa"
    assert store.key_type_of(store.make_key("ecdsa")) == "ecdsa"
    store.remove_next_key(tmp_path, "mail.example.com")
    assert store.read_next_key(tmp_path, "mail.example.com") is None


def _lineage(tmp_path: Path) -> tuple[object, Path]:
    lineage = own_lineage(tmp_path, "mail.example.com")
    archive = lineage.config_dir / "archive" / "mail.example.com"
    live = lineage.config_dir / "live" / "mail.example.com"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    key = archive / "privkey1.pem"
    key.write_bytes(b"OLD KEY")
    key.chmod(0o600)
    os.symlink("../../archive/mail.example.com/privkey1.pem", live / "privkey.pem")
    return lineage, key


def test_next_key_swapped_in_and_restored(tmp_path: Path) -> None:
    """Inside the block certbot's current key file holds the next key and the record (0600)
    keeps its own; afterwards, and also when the block fails (certbot failed), it holds its
    own key again, same mode, and the record is gone."""
    lineage, key = _lineage(tmp_path)
    record = tmp_path / "lineage-key.json"
    with next_key_in_lineage(lineage, b"NEXT KEY", record):  # type: ignore[arg-type]
        assert key.read_bytes() == b"NEXT KEY"
        assert record.stat().st_mode & 0o777 == 0o600
    assert key.read_bytes() == b"OLD KEY" and not record.exists()
    with pytest.raises(RuntimeError), \
            next_key_in_lineage(lineage, b"NEXT KEY", record):  # type: ignore[arg-type]
        raise RuntimeError("certbot failed")
    assert key.read_bytes() == b"OLD KEY"
    assert key.stat().st_mode & 0o777 == 0o600


def test_a_killed_swap_is_put_back_later(tmp_path: Path) -> None:
    """The process dies inside the block (its finally never runs, as under SIGKILL): the
    lineage key file still holds the next key; ``put_back`` restores its own key and mode
    from the record, removes the record, and is a no-op afterwards."""
    lineage, key = _lineage(tmp_path)
    record = tmp_path / "lineage-key.json"
    swap = next_key_in_lineage(lineage, b"NEXT KEY", record)  # type: ignore[arg-type]
    swap.__enter__()  # never left: the process was killed here
    assert key.read_bytes() == b"NEXT KEY"
    assert put_back(record) == key
    assert key.read_bytes() == b"OLD KEY" and key.stat().st_mode & 0o777 == 0o600
    assert not record.exists() and put_back(record) is None


def test_a_broken_swap_record_is_a_clear_error(tmp_path: Path) -> None:
    """A record that cannot be read as one says what to check and what to delete."""
    record = tmp_path / "lineage-key.json"
    record.write_text("[" * 100_000)
    with pytest.raises(RolloverError, match=r"compare the lineage's privkey\.pem"):
        put_back(record)


def test_next_key_refused_without_lineage(tmp_path: Path) -> None:
    """No certbot lineage to swap into: a clear error saying to renew once first."""
    with pytest.raises(RolloverError, match="elemta cert renew"), \
            next_key_in_lineage(own_lineage(tmp_path, "mail.example.com"), b"K",
                                tmp_path / "record.json"):
        pass


def _config(body: str) -> object:
    return parse_config('[server]\nhostname = "mail.example.com"\n' + body)


def test_dane_settings() -> None:
    """[tls.dane] defaults off; a resolver that is not host:port is refused saying so;
    key_type "ecdsa+rsa" gives two certificates, the RSA one in its own lineage."""
    config = _config("")
    assert config.tls.dane == (False, False, "")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="not a DNS server address"):
        _config('[tls.dane]\nresolver = "dns.example"\n')
    config = _config('[tls.letsencrypt]\nkey_type = "ecdsa+rsa"\n[tls.dane]\n'
                     'resolver = "127.0.0.1:5353"\n')
    assert config.tls.dane.resolver == "127.0.0.1:5353"  # type: ignore[attr-defined]
    first, second = slots(config)  # type: ignore[arg-type]
    assert (first.key_type, first.cert_name, first.variant) == ("ecdsa", "mail.example.com", "")
    assert (second.key_type, second.cert_name, second.variant) == \
        ("rsa", "mail.example.com-rsa", "rsa")


def test_key_change_args() -> None:
    """A served key of another type than configured: a new key of the configured type; the
    same type, an unknown one, or DANE: none."""
    assert key_change_args("rsa", "ecdsa", dane=False) == ["--key-type", "rsa", "--new-key"]
    assert key_change_args("rsa", "rsa", dane=False) == []
    assert key_change_args("rsa", "", dane=False) == []
    assert key_change_args("rsa", "ecdsa", dane=True) == []


def test_dual_certificates_refused_in_a_cluster() -> None:
    """key_type = "ecdsa+rsa" with [cluster] redis_url is refused saying why (the cluster
    shares one certificate per name)."""
    with pytest.raises(ConfigError, match="cannot be shared through"):
        _config('[tls.letsencrypt]\nkey_type = "ecdsa+rsa"\n'
                '[cluster]\nredis_url = "redis://127.0.0.1:6379/0"\n')


def test_a_finish_still_running_is_not_undone(tmp_path: Path) -> None:
    """The record of a finish whose process still runs (its pid and start time: here this
    test's parent process) is left alone, put_back saying to try again when it has ended; a
    record whose pid now belongs to a process started at another time (the pid was reused:
    the finish is gone) is undone."""
    lineage, key = _lineage(tmp_path)
    record = tmp_path / "lineage-key.json"
    swap = next_key_in_lineage(lineage, b"NEXT KEY", record)  # type: ignore[arg-type]
    swap.__enter__()
    running = os.getppid()
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "pid": running, "started": rollover._started(running)}))
    with pytest.raises(RolloverError, match=f"pid {running}"):
        put_back(record)
    assert key.read_bytes() == b"NEXT KEY"
    record.write_text(json.dumps({**doc, "pid": running, "started": 1}))
    assert put_back(record) == key and key.read_bytes() == b"OLD KEY"


def test_the_daemon_puts_an_interrupted_swap_back_before_renewing(tmp_path: Path) -> None:
    """The manager's renewal gate (RenewalAccess) undoes a killed finish's swap before
    certbot runs, and says so; a broken record blocks the renewal (said once) instead."""
    config = parse_config(f'[server]\nhostname = "mail.example.com"\n[tls.letsencrypt]\n'
                          f'cache_dir = "{tmp_path}"\n', str(tmp_path / "e.toml"), tmp_path)
    lineage, key = _lineage(tmp_path)
    record = swapped_key_path(tmp_path, "mail.example.com")
    record.parent.mkdir(mode=0o700, exist_ok=True)
    swap = next_key_in_lineage(lineage, b"NEXT KEY", record)  # type: ignore[arg-type]
    swap.__enter__()  # never left (kept referenced: a collected generator would clean up)
    assert key.read_bytes() == b"NEXT KEY"
    access = RenewalAccess(config, current_user(), slots(config)[0])
    with capturedLogs() as logs:
        assert not access.blocked("0a", lineage)  # type: ignore[arg-type]
    assert key.read_bytes() == b"OLD KEY" and not record.exists()
    assert any("put certbot's own key back into" in formatEvent(e) for e in logs)
    record.write_text("{broken")
    with capturedLogs() as logs:
        assert access.blocked("0a", lineage)  # type: ignore[arg-type]
        assert access.blocked("0a", lineage)  # type: ignore[arg-type]
    assert sum("not renewing:" in formatEvent(e) for e in logs) == 1


def test_a_broken_rollover_record_reads_as_none(tmp_path: Path) -> None:
    """rollover.json nested 100,000 deep reads as no record (it escaped as RecursionError
    into every command and every daemon check)."""
    path = tmp_path / "dane" / "mail.example.com.rollover.json"
    path.parent.mkdir()
    path.write_text("[" * 100_000)
    assert store.read_rollover(tmp_path, "mail.example.com") is None
