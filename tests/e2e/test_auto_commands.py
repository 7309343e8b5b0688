"""End to end with Pebble and a running daemon: `elemta cert renew`, a renewal
by certbot from a timer (SIGHUP route), and `elemta cert test`."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from elemta_smtp.commands.cert_test import cert_test_main
from elemta_smtp.config import load_config
from tests.e2e.pebble import Pebble
from tests.e2e.test_auto_acquire import DOMAIN, maildir_messages, served_certificate, write_config
from tests.support import Daemon, Setup, elemta_command, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@contextmanager
def daemon_with_certificate(setup: Setup, pebble: Pebble) -> Iterator[Daemon]:
    """A daemon that has obtained its first certificate (and mailed "issued")."""
    write_config(setup, pebble)
    with running_daemon(setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        wait_until(lambda: len(maildir_messages(setup)) == 1, "the issued notice", timeout=30, daemon=daemon)
        yield daemon


def test_cert_renew_command(pebble: Pebble, elemta_setup: Setup) -> None:
    """`elemta cert renew` forces a renewal, prints old and new serial and not-after, the
    daemon serves the new certificate and mails "renewed"."""
    with daemon_with_certificate(elemta_setup, pebble) as daemon:
        old = served_certificate(elemta_setup, cafile=pebble.root_path)
        done = subprocess.run(
            elemta_command("cert", "renew", "-c", str(elemta_setup.config_path)),
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)})
        assert done.returncode == 0, done.stdout + done.stderr
        new = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert new.serial_number != old.serial_number
        old_hex, new_hex = format(old.serial_number, "x"), format(new.serial_number, "x")
        assert f"renewed: serial {old_hex} -> {new_hex}" in done.stdout
        assert "not after:" in done.stdout
        assert f"serves serial {new_hex}" in done.stdout
        wait_until(lambda: len(maildir_messages(elemta_setup)) == 2,
                   "renewed notice", timeout=30, daemon=daemon)
        assert b"renewed" in maildir_messages(elemta_setup)[1]


def test_timer_route_updates_daemon_and_state(pebble: Pebble, elemta_setup: Setup) -> None:
    """`certbot renew` run outside the daemon (systemd timer) ends with the daemon serving the
    new certificate (the installer's SIGHUP: the first, since the daemon's own certbot sent
    none), state.json naming it, and one "renewed" notice."""
    with daemon_with_certificate(elemta_setup, pebble) as daemon:
        old = served_certificate(elemta_setup)
        assert "SIGHUP: reloading certificates" not in daemon.log()
        pebble.certbot("renew", "--force-renewal",
                       certbot_dir=elemta_setup.cache_dir / "certbot")
        daemon.wait_for_log("SIGHUP: reloading certificates", count=1)
        new = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert new.serial_number != old.serial_number
        wait_until(lambda: len(maildir_messages(elemta_setup)) == 2,
                   "renewed notice", timeout=30, daemon=daemon)
        # The notice is delivered first and recorded as sent just after: wait for the record.
        state_path = elemta_setup.cache_dir / "state.json"
        wait_until(lambda: json.loads(state_path.read_text())["outbox"] == [],
                   "the renewed notice recorded as sent", timeout=30, daemon=daemon)
        state = json.loads(state_path.read_text())
        assert state["last_seen"]["serial"] == format(new.serial_number, "x")
        checks = daemon.log().count("certificate check done:")
        daemon.sighup()  # another reload: nothing new to mail
        daemon.wait_for_log("SIGHUP: reloading certificates", count=2)
        daemon.wait_for_log("certificate check done:", count=checks + 1)  # the check after it
        last = [line for line in daemon.log().splitlines() if "certificate check done:" in line][-1]
        assert last.endswith("no notice due"), daemon.log()
        assert len(maildir_messages(elemta_setup)) == 2


def test_cert_test_passes_against_running_daemon(pebble: Pebble, elemta_setup: Setup,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`elemta cert test --dry-run` passes every step when DNS points here and the daemon runs."""
    write_config(elemta_setup, pebble)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.ca_bundle))
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        out = io.StringIO()
        status = cert_test_main(load_config(elemta_setup.config_path), True, out,
                                resolver=lambda _domain: ["127.0.0.1"])
    text = out.getvalue()
    assert status == 0, text
    for step in ("is valid", "resolves to 127.0.0.1", "this host's", "HTTP-01 listener answers",
                 "probe token fetched back", "ACME directory", "certbot --dry-run"):
        assert any(line.startswith("[ ok ]") and step in line for line in text.splitlines()), text
    assert not list((elemta_setup.cache_dir / "webroot" / ".well-known" / "acme-challenge").iterdir())


def test_cert_test_fails_without_daemon(pebble: Pebble, elemta_setup: Setup,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no daemon running, `elemta cert test` marks the HTTP-01 step failed and exits 1."""
    write_config(elemta_setup, pebble)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.ca_bundle))
    out = io.StringIO()
    status = cert_test_main(load_config(elemta_setup.config_path), False, out,
                            resolver=lambda _domain: ["127.0.0.1"])
    text = out.getvalue()
    assert status == 1
    assert "[FAIL] nothing answers on the HTTP-01 listener" in text
    assert "fix: start the daemon" in text
    assert "[ ok ] ACME directory" in text


def test_cert_test_unresolvable_domain(pebble: Pebble, elemta_setup: Setup,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A domain without DNS records fails the DNS step with advice to create one."""
    write_config(elemta_setup, pebble)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.ca_bundle))

    def no_dns(domain: str) -> list[str]:
        raise OSError(f"[Errno -2] Name or service not known: {domain}")

    out = io.StringIO()
    status = cert_test_main(load_config(elemta_setup.config_path), False, out, resolver=no_dns)
    assert status == 1
    assert "create an A (and/or AAAA) record for mail.example.com" in out.getvalue()
    # the listener is still checked without DNS: here nothing runs, so that fails too
    assert "[FAIL] nothing answers on the HTTP-01 listener" in out.getvalue()
