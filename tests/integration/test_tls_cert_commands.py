"""`elemta cert test` and `elemta cert renew` without an ACME server: each failing step
says what to fix and sets the exit status; real sockets on 127.0.0.1, real files."""

from __future__ import annotations

import io
import os
import socket
import subprocess
from pathlib import Path

import pytest

from elemta_smtp.acme.blocking import run_blocking
from elemta_smtp.cache import lineages
from elemta_smtp.cache.lineages import wrong_user
from elemta_smtp.commands.cert_renew import cert_renew_main
from elemta_smtp.commands.cert_test import cert_test_main
from elemta_smtp.config import load_config
from tests.support import Setup, elemta_command, running_daemon


def no_dns(domain: str) -> list[str]:
    raise OSError(f"[Errno -2] Name or service not known: {domain}")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path / "elemta")
    with socket.socket() as closed:  # a port nothing listens on: the ACME directory is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    s.write({"tls.letsencrypt": {"enabled": True, "email": "admin@example.com",
                                 "directory_url": f"https://127.0.0.1:{port}/dir"}})
    return s


def test_listener_checked_even_without_dns(setup: Setup) -> None:
    """With no DNS record the HTTP-01 listener is still checked (here: up), the probe through
    the domain is skipped, the unreachable ACME directory fails, and the exit status is 1."""
    with running_daemon(setup):
        out = io.StringIO()
        status = cert_test_main(load_config(setup.config_path), False, out, resolver=no_dns)
    text = out.getvalue()
    assert status == 1
    assert "[FAIL] DNS: mail.example.com does not resolve" in text
    assert f"[ ok ] HTTP-01 listener answers on 127.0.0.1:{setup.http_port}" in text
    assert "[skip] HTTP-01 probe through http://mail.example.com/" in text
    assert "[FAIL] ACME directory https://127.0.0.1:" in text and "fix: allow outgoing HTTPS" in text
    assert text.rstrip().endswith("2 check(s) failed.")


def test_probe_fails_when_dns_points_elsewhere(setup: Setup) -> None:
    """A resolved address that this daemon does not answer on fails the probe with advice."""
    with running_daemon(setup):
        out = io.StringIO()
        status = cert_test_main(load_config(setup.config_path), False, out,
                                resolver=lambda _d: ["127.0.0.2"])
    text = out.getvalue()
    assert status == 1
    assert f"[FAIL] fetching http://mail.example.com:{setup.http_port}/.well-known/acme-challenge/" in text
    assert "via 127.0.0.2 failed" in text
    assert not list((setup.cache_dir / "webroot" / ".well-known" / "acme-challenge").iterdir())


def test_dry_run_skipped_after_a_failure(setup: Setup) -> None:
    """--dry-run does not spend a CA attempt when an earlier step already failed."""
    out = io.StringIO()
    assert cert_test_main(load_config(setup.config_path), True, out, resolver=no_dns) == 1
    assert "[skip] certbot --dry-run: fix the failures above first" in out.getvalue()


def test_renew_without_lineage_says_what_to_do(setup: Setup) -> None:
    """`cert renew` before any certificate exists exits 1 and points at `elemta cert test`."""
    out = io.StringIO()
    assert cert_renew_main(load_config(setup.config_path), out) == 1
    assert "no certificate for mail.example.com" in out.getvalue()
    assert "run `elemta cert test` to see what stops it" in out.getvalue()


@pytest.mark.parametrize(("euid", "owner", "refused"), [
    pytest.param(0, 65534, True, id="root-over-daemon-cache"),
    pytest.param(0, 0, False, id="root-over-root-cache"),
    pytest.param(65534, 65534, False, id="daemon-user"),
])
def test_root_is_refused_over_the_daemon_users_cache(tmp_path: Path, euid: int, owner: int,
                                                    refused: bool) -> None:
    """Run as root over a cache the daemon's user owns, renew/dry-run would leave root-owned
    certbot files the daemon cannot use: refused with the sudo -u command to run instead."""
    cache = tmp_path / "cache"
    cache.mkdir()
    if os.geteuid() == 0:
        os.chown(cache, owner, owner)
    elif owner != os.geteuid():
        pytest.skip("needs root to give the cache to another user")
    message = wrong_user(cache, "elemta cert renew -c /etc/elemta/elemta.toml", euid=euid)
    assert (message is not None) == refused
    if message:
        assert "sudo -u nobody elemta cert renew -c /etc/elemta/elemta.toml" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_certbot_runs_as_the_owner_of_the_lineage_folders(tmp_path: Path) -> None:
    """Run as root, `cert renew` runs certbot as the owner of the lineage's folders (nobody
    here), so no root-owned file lands in them; a root-owned lineage runs as root."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    os.chown(config_dir, 65534, 65534)
    lineage = lineages.Lineage("mail.example.com", config_dir, tmp_path / "w", tmp_path / "l")
    user = lineages.certbot_user(lineage)
    assert user is not None and user.uid == 65534 and user.name == "nobody"
    probe = ["/bin/sh", "-c", 'test "$(id -u):$(id -g)" = 65534:65534 || exit 3']
    assert run_blocking(probe, timeout=30, user=user).ok
    assert not run_blocking(probe, timeout=30).ok  # as root: the probe exits 3
    os.chown(config_dir, 0, 0)
    assert lineages.certbot_user(lineage) is None


def test_renew_refuses_a_deleted_lineage(setup: Setup) -> None:
    """A recorded lineage whose renewal configuration is gone: `cert renew` says where it
    looked and exits 1 without running certbot."""
    folders = setup.root / "letsencrypt"
    lineages.write_record(setup.cache_dir, "mail.example.com", lineages.Lineage(
        "mail.example.com", folders / "config", folders / "work", folders / "logs"))
    out = io.StringIO()
    assert cert_renew_main(load_config(setup.config_path), out) == 1
    assert (f"certbot has no certificate named mail.example.com in {folders / 'config'}"
            in out.getvalue())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the cache to another user")
def test_config_check_and_cert_info_say_the_daemon_cannot_renew(tmp_path: Path) -> None:
    """A certificate installed from root's certbot folders while the daemon runs as another
    user (nobody owns the cache): `elemta config check` and `elemta cert info` (the real
    commands) say, in one sentence with the fix, that elemta cannot renew it."""
    setup = Setup(tmp_path / "elemta")
    setup.write({"tls.letsencrypt": {"enabled": True, "email": "admin@example.com"}})
    folders = tmp_path / "letsencrypt"
    lineage = lineages.Lineage("mail.example.com", folders / "config", folders / "work",
                               folders / "logs")
    lineage.renewal_conf.parent.mkdir(parents=True)
    lineage.renewal_conf.write_text("version = 5\n")
    lineages.write_record(setup.cache_dir, "mail.example.com", lineage)
    os.chown(setup.cache_dir, 65534, 65534)
    expected = (f"user nobody, who runs elemta, cannot write {folders / 'config'}, and certbot "
                f"keeps the certificate mail.example.com in {folders / 'config'}, so elemta "
                "cannot renew it: enable the packaged timer")
    check = subprocess.run(elemta_command("config", "check", "-c", str(setup.config_path)),
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"warning: {expected}" in check.stdout
    info = subprocess.run(elemta_command("cert", "info", "-c", str(setup.config_path)),
                          capture_output=True, text=True, timeout=60, check=False)
    assert f"WARNING: {expected}" in info.stdout
    setup.write({"tls.letsencrypt": {"enabled": True, "email": "admin@example.com"},
                 "tls.renewal": {"auto_renew": False}})  # the timer renews: nothing to say
    quiet = subprocess.run(elemta_command("config", "check", "-c", str(setup.config_path)),
                           capture_output=True, text=True, timeout=60, check=False)
    assert "cannot renew" not in quiet.stdout


def test_tls_alpn_probe_through_the_resolved_address(tmp_path: Path) -> None:
    """With challenge = "tls-alpn-01" `elemta cert test` checks the HTTPS listener instead of
    HTTP-01: a probe answer comes back as a validation certificate via each resolved
    address (127.0.0.1: ok; 127.0.0.2, where nothing listens: FAIL with advice), and the
    probe file is removed."""
    from tests.support import free_port

    setup = Setup(tmp_path / "elemta")
    https_port = free_port()
    setup.write({"tls.letsencrypt": {"enabled": True, "email": "admin@example.com",
                                     "challenge": "tls-alpn-01", "http_addr": "",
                                     "https_addr": f"127.0.0.1:{https_port}"}})
    with running_daemon(setup):
        out = io.StringIO()
        cert_test_main(load_config(setup.config_path), False, out,
                       resolver=lambda _d: ["127.0.0.1", "127.0.0.2"])
    text = out.getvalue()
    assert f"[ ok ] HTTPS listener answers on 127.0.0.1:{https_port}" in text
    assert f"[ ok ] TLS-ALPN-01 probe answered via 127.0.0.1 port {https_port}" in text
    assert f"[FAIL] TLS-ALPN-01 handshake with 127.0.0.2 port {https_port} failed" in text
    assert "HTTP-01" not in text
    assert not list((setup.cache_dir / "tls-alpn-01").iterdir())
