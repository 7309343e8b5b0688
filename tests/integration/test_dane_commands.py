"""`elemta dns records`, `elemta cert info` and `elemta dane ...`, the real commands in child
processes, with key_type = "ecdsa+rsa" (two certificates in live/) and a DNS server on
127.0.0.1 whose TLSA records the test sets."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from elemta_smtp.acme.dane import key_value
from elemta_smtp.cache import live
from elemta_smtp.cache.lineages import own_lineage
from tests.certs import make_ca, make_leaf, utcnow
from tests.dnsserver import running_dns
from tests.support import Setup, elemta_command

OWNER = "_25._tcp.mail.example.com."


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Setup, str, str]:
    """An ECDSA and an RSA certificate for mail.example.com in live/, [tls.dane] enabled;
    returns the setup and both keys' TLSA values."""
    s = Setup(tmp_path)
    s.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com",
                                 "key_type": "ecdsa+rsa"},
             "tls.dane": {"enabled": True}})
    ca = make_ca()
    ecdsa = make_leaf(ca, ["mail.example.com"])
    rsa = make_leaf(ca, ["mail.example.com"], key_type="rsa")
    live.write_certificate(s.cache_dir, "mail.example.com", ecdsa.key_pem, ecdsa.fullchain_pem)
    live.write_certificate(s.cache_dir, "mail.example.com", rsa.key_pem, rsa.fullchain_pem, "rsa")
    return s, key_value(ecdsa.cert.public_key()), key_value(rsa.cert.public_key())


def run(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command(*args, "-c", str(setup.config_path)),
                          capture_output=True, text=True, timeout=120, check=False)


def test_both_keys_records_shown(setup: tuple[Setup, str, str]) -> None:
    """`dns records` prints a TLSA record for each key; `cert info` shows each certificate's
    record and that they are served together."""
    s, ecdsa, rsa = setup
    records = run(s, "dns", "records")
    assert records.returncode == 0, records.stderr
    assert f"{OWNER}\t3600\tIN\tTLSA\t{ecdsa}" in records.stdout
    assert f"{OWNER}\t3600\tIN\tTLSA\t{rsa}" in records.stdout
    info = run(s, "cert", "info")
    assert f"DANE TLSA:  {OWNER} IN TLSA {ecdsa}" in info.stdout, info.stdout
    assert f"DANE TLSA:  {OWNER} IN TLSA {rsa}" in info.stdout
    assert info.stdout.count("served with:") == 2


def test_status_check_marks_missing_records(setup: tuple[Setup, str, str]) -> None:
    """`dane status --check` marks each key's record present or MISSING and exits 1 while
    one is missing."""
    s, ecdsa, rsa = setup
    with running_dns(f"{OWNER} 60 IN TLSA {ecdsa}\n") as port:
        status = run(s, "dane", "status", "--check", "--resolver", f"127.0.0.1:{port}")
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"current: {OWNER} IN TLSA {ecdsa}  [present]" in status.stdout
    assert f"current: {OWNER} IN TLSA {rsa}  [MISSING]" in status.stdout
    assert "1 record(s) not published" in status.stdout


def test_finish_refused_until_published(setup: tuple[Setup, str, str]) -> None:
    """`rollover start` prints both keys' next records; `finish` is refused (exit 1) naming
    each next record DNS lacks, before any certbot runs."""
    s, ecdsa, rsa = setup
    started = run(s, "dane", "rollover", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.count("; next key, ADD") == 2
    assert "(ECDSA P-256 key, " in started.stdout and "(RSA 2048 key, " in started.stdout
    assert "none served" not in started.stdout
    with running_dns(f"{OWNER} 60 IN TLSA {ecdsa}\n{OWNER} 60 IN TLSA {rsa}\n") as port:
        refused = run(s, "dane", "rollover", "finish", "--resolver", f"127.0.0.1:{port}")
    assert refused.returncode == 1
    assert "refused: DNS does not publish the TLSA record of the next key" in refused.stdout
    assert refused.stdout.count(f"  {OWNER} IN TLSA 3 1 1 ") == 2


def test_rollover_needs_dane_enabled(tmp_path: Path) -> None:
    """Without [tls.dane] enabled a rollover is refused with what to set."""
    s = Setup(tmp_path)
    s.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com"}})
    done = run(s, "dane", "rollover", "start")
    assert done.returncode == 1
    assert "Set [tls.dane] enabled = true in elemta.toml" in done.stdout
    done = run(s, "dane", "rollover", "finish")
    assert done.returncode == 1


def test_rollover_of_a_hand_managed_certificate_is_refused(tmp_path: Path) -> None:
    """[tls] cert_file with [tls.letsencrypt] enabled = false: `dane status` shows the key of
    the file served; a rollover (which would run certbot against the CA) is refused with
    what to do instead, and no next key is made."""
    ca = make_ca()
    leaf = make_leaf(ca, ["mail.example.com"])
    (tmp_path / "full.pem").write_bytes(leaf.fullchain_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    s = Setup(tmp_path / "elemta")
    s.write({"tls": {"cert_file": str(tmp_path / "full.pem"),
                     "key_file": str(tmp_path / "key.pem")},
             "tls.letsencrypt": {"domain": "mail.example.com"},
             "tls.dane": {"enabled": True}})
    status = run(s, "dane", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"current: {OWNER} IN TLSA {key_value(leaf.cert.public_key())}" in status.stdout
    assert f"(ECDSA P-256 key, {tmp_path / 'full.pem'})" in status.stdout
    for step in ("start", "finish"):
        done = run(s, "dane", "rollover", step)
        assert done.returncode == 1
        assert "[tls.letsencrypt] enabled = false" in done.stdout
        assert "publish the new key's TLSA record next to the current one" in done.stdout
    assert not (s.cache_dir / "dane").exists() or not any((s.cache_dir / "dane").iterdir())


def test_an_expired_certificate_is_not_called_the_key_served(tmp_path: Path) -> None:
    """An expired live/ certificate: `dane status` says it is not served and why, prints no
    "current" record, and `--check` says there is nothing to check (exit 1)."""
    s = Setup(tmp_path)
    s.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com"},
             "tls.dane": {"enabled": True}})
    old = make_leaf(make_ca(), ["mail.example.com"], not_before=utcnow() - timedelta(days=100),
                    not_after=utcnow() - timedelta(days=1))
    live.write_certificate(s.cache_dir, "mail.example.com", old.key_pem, old.fullchain_pem)
    status = run(s, "dane", "status")
    assert "  not served: " in status.stdout and "expired" in status.stdout, status.stdout
    assert "current:" not in status.stdout and "; the key served" not in status.stdout
    with running_dns(f"{OWNER} 60 IN TLSA 3 1 1 {'0' * 64}\n") as port:
        check = run(s, "dane", "status", "--check", "--resolver", f"127.0.0.1:{port}")
    assert check.returncode == 1
    assert "; nothing to check: no key is served yet" in check.stdout


@pytest.mark.parametrize("command", [("dane", "status"), ("dane", "rollover", "start"),
                                     ("dns", "records")])
def test_a_broken_next_key_file_is_one_error_line(setup: tuple[Setup, str, str],
                                                  command: tuple[str, ...]) -> None:
    """A next-key file that holds no key: one `error:` line on stderr saying what to do,
    exit 1, no traceback."""
    s, _, _ = setup
    assert run(s, "dane", "rollover", "start").returncode == 0
    [next_key] = (s.cache_dir / "dane").glob("mail.example.com.next-key.pem")
    next_key.write_text("garbage\n")
    done = run(s, *command)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln]
    assert line.startswith("error: ") and str(next_key) in line


def test_a_bad_resolver_is_a_usage_error_before_any_output(setup: tuple[Setup, str, str]) -> None:
    """`dane status --check --resolver 127.0.0.1` (no port): exit 2, usage on stderr,
    nothing on stdout."""
    s, _, _ = setup
    done = run(s, "dane", "status", "--check", "--resolver", "127.0.0.1")
    assert done.returncode == 2 and done.stdout == ""
    assert '"127.0.0.1" is not a DNS server address' in done.stderr


def test_an_rsa_lineage_without_a_served_certificate_is_not_renewed(tmp_path: Path) -> None:
    """key_type = "ecdsa+rsa" with DANE, the RSA lineage made by a `finish` that then failed
    (its key never published) and no RSA certificate served: `elemta cert renew` does not
    renew it (that would serve an unpublished key); only a rollover brings it."""
    s = Setup(tmp_path)
    s.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com",
                                 "key_type": "ecdsa+rsa"},
             "tls.dane": {"enabled": True}})
    ecdsa = make_leaf(make_ca(), ["mail.example.com"])
    live.write_certificate(s.cache_dir, "mail.example.com", ecdsa.key_pem, ecdsa.fullchain_pem)
    conf = own_lineage(s.cache_dir, "mail.example.com-rsa").renewal_conf
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("version = 5.8.0\n")
    done = run(s, "cert", "renew")
    assert ("RSA certificate: nothing to renew: with [tls.dane] enabled the RSA certificate is "
            "obtained by a staged rollover") in done.stdout, done.stdout
    assert "renewing mail.example.com-rsa" not in done.stdout
