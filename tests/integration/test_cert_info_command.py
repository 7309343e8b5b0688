"""`elemta cert info`, the real command in a child process, on real certificate files."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from elemta_smtp.cache import layout, live
from tests.certs import CA, make_ca, make_leaf
from tests.support import Setup, elemta_command

DOMAIN = "mail.example.com"


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca("R11", parent=make_ca("ISRG Root X1"), organization="Let's Encrypt")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.write()
    return s


def cert_info(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command("cert", "info", "-c", str(setup.config_path), *args),
                          capture_output=True, text=True, timeout=60, check=False)


def test_expired_certificate_reads_expired_days_ago(setup: Setup, ca: CA) -> None:
    """A live file that expired a day and a half ago reads "expired 1 day ago" (not "-2 days
    left"), is not served, and the command exits 1."""
    now = datetime.now(timezone.utc)
    leaf = make_leaf(ca, [DOMAIN], not_before=now - timedelta(days=90),
                     not_after=now - timedelta(days=1, hours=12))
    live.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)
    result = cert_info(setup)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(expired 1 day ago)" in result.stdout
    assert "days left" not in result.stdout
    assert "NOT SERVED" in result.stdout


def test_shipped_example_names_what_is_missing(tmp_path: Path) -> None:
    """packaging/elemta.toml unedited (Let's Encrypt enabled) with its cache folder not created
    yet: the problem says the cache does not exist and `elemta serve` obtains the certificate,
    not to enable Let's Encrypt."""
    example = (Path(__file__).parents[2] / "packaging" / "elemta.toml").read_text()
    cache, pid = tmp_path / "var-lib-elemta", tmp_path / "elemta.pid"
    assert '"/var/lib/elemta"' in example and '"/run/elemta/elemta.pid"' in example
    config = tmp_path / "elemta.toml"
    config.write_text(example.replace('"/var/lib/elemta"', f'"{cache}"')
                      .replace('"/run/elemta/elemta.pid"', f'"{pid}"'))
    result = subprocess.run(elemta_command("cert", "info", "-c", str(config)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"PROBLEM: no certificate yet: the cache {cache} does not exist. "
                                    "`elemta serve` creates it and obtains a certificate for "
                                    "mail.example.com from https://acme-v02.api.letsencrypt.org/directory")
    assert "enable [tls.letsencrypt]" not in result.stdout


def test_skipped_files_and_readable_keys_are_warned(setup: Setup, ca: CA) -> None:
    """A live/ file whose name is not a DNS name and a certificate file others can read are
    each a WARNING line; the served certificate is fine, so the exit status is 0."""
    leaf = make_leaf(ca, [DOMAIN])
    path = live.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)
    path.chmod(0o644)
    skipped = layout.live_dir(setup.cache_dir) / "mail_example.com.pem"
    skipped.write_bytes(leaf.combined_pem)
    skipped.chmod(0o600)
    result = cert_info(setup)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        f'WARNING: {skipped} is skipped: "mail_example.com" is not a DNS name: name the file after '
        "the certificate's domain, such as mail.example.com.pem",
        f"WARNING: {path} holds a private key and its group and others can read it (mode 0644): "
        f"chmod 600 {path}",
    ]


def test_no_tlsa_line_for_a_certificate_never_presented(setup: Setup, ca: CA, tmp_path: Path) -> None:
    """A hand-managed [tls] cert_file answers mail.example.com, so live/mail.example.com.pem is
    never presented: it is marked so and gets no DANE TLSA line; the hand-managed one does."""
    hand = make_leaf(ca, [DOMAIN])
    (tmp_path / "hand.crt").write_bytes(hand.fullchain_pem)
    (tmp_path / "hand.key").write_bytes(hand.key_pem)
    (tmp_path / "hand.key").chmod(0o600)
    setup.write({"tls": {"cert_file": str(tmp_path / "hand.crt"), "key_file": str(tmp_path / "hand.key")}})
    cached = make_leaf(ca, [DOMAIN])
    live.write_certificate(setup.cache_dir, DOMAIN, cached.key_pem, cached.fullchain_pem)
    result = cert_info(setup)
    assert result.returncode == 0, result.stdout + result.stderr
    tlsa = [line for line in result.stdout.splitlines() if "DANE TLSA:" in line]
    assert len(tlsa) == 1
    assert "never presented" in result.stdout.split(str(setup.cache_dir / "live"))[1]


def test_info_does_not_import_twisted() -> None:
    """`elemta cert info` (commands/cert_info.py, tls/report.py) imports no Twisted, so it
    starts fast."""
    code = ("import sys, elemta_smtp.commands.cert_info; "
            "print(any(m.startswith('twisted') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_cert_info_command_imports_neither_twisted_nor_certbot(tmp_path: Path) -> None:
    """The whole `elemta cert info` command (CLI included) loads no Twisted, no certbot and no
    dnspython."""
    cfg_path = tmp_path / "elemta.toml"
    cfg_path.write_text(f'[server]\nhostname = "{DOMAIN}"\npid_file = "{tmp_path / "pid"}"\n'
                        f'[tls.letsencrypt]\ncache_dir = "{tmp_path / "cache"}"\n')
    code = ("import io, sys; from elemta_smtp.cli import main; "
            f"main(['cert', 'info', '-c', {str(cfg_path)!r}], out=io.StringIO(), err=io.StringIO()); "
            "print(sorted({m.split('.')[0] for m in sys.modules}\n"
            "             & {'twisted', 'certbot', 'acme', 'josepy', 'dns'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_dns_records_without_check_imports_neither_twisted_nor_dnspython(tmp_path: Path) -> None:
    """`elemta dns records` (printing only) loads no Twisted and no dnspython; `config check`
    neither."""
    cfg_path = tmp_path / "elemta.toml"
    cfg_path.write_text(f'[server]\nhostname = "{DOMAIN}"\npid_file = "{tmp_path / "pid"}"\n'
                        f'[tls.letsencrypt]\ncache_dir = "{tmp_path / "cache"}"\n'
                        '[mta_sts]\nenabled = true\n')
    for command in (["dns", "records"], ["config", "check"]):
        code = ("import io, sys; from elemta_smtp.cli import main; "
                f"main({[*command, '-c', str(cfg_path)]!r}, out=io.StringIO(), err=io.StringIO()); "
                "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'dns'}))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True)
        assert result.stdout.strip() == "[]", command


def test_every_configured_name_is_checked(tmp_path: Path, ca: CA) -> None:
    """With extra_names and [mta_sts], a live certificate lacking mta-sts.example.com is a
    PROBLEM naming it (exit 1); one with a name no longer configured gets a WARNING; one with
    exactly the configured names is fine."""
    setup = Setup(tmp_path)
    setup.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com",
                                     "extra_names": ["mx2.example.com"]},
                 "mta_sts": {"enabled": True}})
    names = [DOMAIN, "mx2.example.com", "mta-sts.example.com"]
    for served, code, expected in (
            (names[:2], 1, "PROBLEM: no certificate served covers mta-sts.example.com"),
            ([*names, "old.example.com"], 0, "covers old.example.com, no longer in elemta.toml"),
            (names, 0, "")):
        leaf = make_leaf(ca, served)
        live.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)
        result = cert_info(setup)
        assert result.returncode == code, result.stdout + result.stderr
        assert expected in result.stdout
        if not expected:
            assert "PROBLEM" not in result.stdout and "WARNING" not in result.stdout, result.stdout
