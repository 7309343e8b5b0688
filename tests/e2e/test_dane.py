"""End to end with Pebble and a running daemon, [tls.dane] enabled: every renewal path keeps
the key (its TLSA 3 1 1 value), and a staged rollover against a DNS server whose records
the test changes (tests/dnsserver.py) changes it only once its record is published."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.dnsserver import ZoneResolver, running_dns_server
from tests.e2e.conftest import StartPebble
from tests.e2e.pebble import Pebble
from tests.e2e.test_auto_acquire import DOMAIN, maildir_messages, served_certificate, write_config
from tests.support import Daemon, Setup, elemta_command, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIFETIME = 45  # seconds: the daemon's renewal is due 30 s after issuance
OWNER = f"_25._tcp.{DOMAIN}."


def tlsa(cert: x509.Certificate) -> str:
    """The TLSA 3 1 1 value of the certificate's key."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def zone(*values: str) -> str:
    return "".join(f"{OWNER} 60 IN TLSA {v}\n" for v in values) or \
        f"{DOMAIN}. 60 IN A 127.0.0.1\n"


def write_dane_config(setup: Setup, pebble: Pebble, resolver: str = "",
                      check_dns: bool = False, **renewal: object) -> None:
    write_config(setup, pebble, **renewal)
    text = setup.config_path.read_text()
    setup.config_path.write_text(
        text + f"\n[tls.dane]\nenabled = true\ncheck_dns = {str(check_dns).lower()}\n"
               f"resolver = \"{resolver}\"\n")


def mail_texts(setup: Setup) -> list[str]:
    """The local mailbox's messages as subject + decoded body."""
    texts = []
    for raw in maildir_messages(setup):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(("plain",))
        texts.append(f"{message['Subject']}\n{body.get_content() if body else ''}")
    return texts


def elemta(setup: Setup, pebble: Pebble, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command(*args, "-c", str(setup.config_path)),
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)})


@contextmanager
def dane_daemon(setup: Setup, pebble: Pebble) -> Iterator[Daemon]:
    with running_daemon(setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        yield daemon


def test_three_renewal_paths_keep_the_key(start_pebble: StartPebble, elemta_setup: Setup) -> None:
    """With [tls.dane] enabled the daemon's own renewal, `elemta cert renew` and a plain
    `certbot renew` (the packaged timer's path) each bring a new certificate with the same
    key: the TLSA 3 1 1 value never changes."""
    pebble = start_pebble(http_port=elemta_setup.http_port, validity_seconds=LIFETIME)
    write_dane_config(elemta_setup, pebble, renewal_days=30, check_interval="10s")
    with dane_daemon(elemta_setup, pebble) as daemon:
        first = served_certificate(elemta_setup, cafile=pebble.root_path)
        value = tlsa(first)
        serials = [first.serial_number]

        # 1. the daemon's own renewal (the short certificate enters its window)
        daemon.wait_for_log(f"certificate for {DOMAIN} renewed", timeout=LIFETIME + 40)
        by_daemon = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert by_daemon.serial_number not in serials
        assert tlsa(by_daemon) == value
        serials.append(by_daemon.serial_number)

        # 2. `elemta cert renew`
        done = elemta(elemta_setup, pebble, "cert", "renew")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"key kept: TLSA {value}" in done.stdout
        by_command = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert by_command.serial_number not in serials
        assert tlsa(by_command) == value
        serials.append(by_command.serial_number)

        # 3. a plain `certbot renew` (no elemta options): the lineage's stored reuse_key
        reloads = daemon.log().count("SIGHUP: reloading certificates")
        pebble.certbot("renew", "--force-renewal",
                       certbot_dir=elemta_setup.cache_dir / "certbot")
        daemon.wait_for_log("SIGHUP: reloading certificates", count=reloads + 1, timeout=30)
        by_certbot = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert by_certbot.serial_number not in serials
        assert tlsa(by_certbot) == value
        conf = (elemta_setup.cache_dir / "certbot" / "config" / "renewal" /
                f"{DOMAIN}.conf").read_text()
        assert re.search(r"^reuse_key = True$", conf, re.M), conf


def test_staged_rollover(pebble: Pebble, elemta_setup: Setup) -> None:
    """`elemta dane rollover start` makes a next key and prints its record; `finish` is
    refused (exit 1, saying what to publish) while DNS lacks it, then, once published,
    serves a certificate with the next key and prints the old record as removable."""
    resolver = ZoneResolver(zone())
    with running_dns_server(resolver) as port:
        write_dane_config(elemta_setup, pebble, resolver=f"127.0.0.1:{port}")
        with dane_daemon(elemta_setup, pebble) as daemon:
            current = tlsa(served_certificate(elemta_setup, cafile=pebble.root_path))
            resolver.set_zone(zone(current))

            started = elemta(elemta_setup, pebble, "dane", "rollover", "start")
            assert started.returncode == 0, started.stdout + started.stderr
            assert f"{OWNER} IN TLSA {current}    ; current key, keep" in started.stdout
            found = re.search(rf"{re.escape(OWNER)} IN TLSA (3 1 1 [0-9a-f]{{64}})    ; next key, ADD",
                              started.stdout)
            assert found is not None, started.stdout
            following = found.group(1)
            assert following != current
            key_file = elemta_setup.cache_dir / "dane" / f"{DOMAIN}.next-key.pem"
            assert key_file.stat().st_mode & 0o777 == 0o600
            # the running daemon mails the records to publish, each on one line
            line = f"  {OWNER} IN TLSA {following}    ; next key, ADD"
            wait_until(lambda: any(line in m for m in mail_texts(elemta_setup)),
                       "the next-key notice", timeout=30, daemon=daemon)

            status = elemta(elemta_setup, pebble, "dane", "status", "--check")
            assert status.returncode == 1, status.stdout
            assert f"{OWNER} IN TLSA {following}  [MISSING]" in status.stdout

            refused = elemta(elemta_setup, pebble, "dane", "rollover", "finish")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "refused: DNS does not publish the TLSA record of the next key" in refused.stdout
            assert f"{OWNER} IN TLSA {following}" in refused.stdout
            assert tlsa(served_certificate(elemta_setup)) == current

            resolver.set_zone(zone(current, following))
            status = elemta(elemta_setup, pebble, "dane", "status", "--check")
            assert status.returncode == 0, status.stdout
            assert f"{OWNER} IN TLSA {following}  [present]" in status.stdout

            done = elemta(elemta_setup, pebble, "dane", "rollover", "finish")
            assert done.returncode == 0, done.stdout + done.stderr
            assert tlsa(served_certificate(elemta_setup, cafile=pebble.root_path)) == following
            removable = done.stdout.split("can now be removed from DNS")[1]
            assert f"{OWNER} IN TLSA {current}" in removable
            assert not key_file.exists()

            status = elemta(elemta_setup, pebble, "dane", "status")
            assert f"current: {OWNER} IN TLSA {following}" in status.stdout
            assert f"retired: {OWNER} IN TLSA {current}" in status.stdout

            # later renewals keep the new key
            renewed = elemta(elemta_setup, pebble, "cert", "renew")
            assert renewed.returncode == 0, renewed.stdout
            assert tlsa(served_certificate(elemta_setup, cafile=pebble.root_path)) == following


def test_check_dns_mails_once_per_key(start_pebble: StartPebble, elemta_setup: Setup) -> None:
    """With check_dns, a published TLSA record changed to a wrong value is a warning in the
    log and one mail (not one per check), and a `cert info` PROBLEM."""
    pebble = start_pebble(http_port=elemta_setup.http_port)
    resolver = ZoneResolver(zone())
    with running_dns_server(resolver) as port:
        write_dane_config(elemta_setup, pebble, resolver=f"127.0.0.1:{port}", check_dns=True,
                          check_interval="10s")
        with dane_daemon(elemta_setup, pebble) as daemon:
            current = tlsa(served_certificate(elemta_setup, cafile=pebble.root_path))
            resolver.set_zone(zone(current))
            checks = daemon.log().count("certificate check done:")
            daemon.wait_for_log("certificate check done:", count=checks + 1, timeout=30)
            assert "DANE: The key served" not in daemon.log()
            wrong = "3 1 1 " + "ab" * 32
            resolver.set_zone(zone(wrong))
            daemon.wait_for_log("matches no published TLSA record", timeout=30)
            wait_until(lambda: any("DANE: no TLSA record matches" in m
                                   for m in mail_texts(elemta_setup)),
                       "the DANE mismatch notice", timeout=30, daemon=daemon)
            checks = daemon.log().count("certificate check done:")
            daemon.wait_for_log("certificate check done:", count=checks + 2, timeout=40)
            mails = [m for m in mail_texts(elemta_setup) if "DANE: no TLSA" in m]
            assert len(mails) == 1, daemon.log()
            assert "ab" * 32 in mails[0]
            info = elemta(elemta_setup, pebble, "cert", "info")
            assert "PROBLEM" in info.stdout and "matches no published TLSA record" in info.stdout, \
                info.stdout


def _certbot_child(pid: int) -> bool:
    """Is a certbot running as a child of process ``pid``?"""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    command = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid and b"certbot" in command:
                return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_finish_never_serves_an_unplanned_key(pebble: Pebble, elemta_setup: Setup,
                                                       sig: signal.Signals) -> None:
    """`rollover finish` killed while its certbot runs with the next key in certbot's lineage:
    SIGTERM puts the lineage's own key back at once; after SIGKILL the next `elemta cert renew`
    does, before certbot runs. That renewal keeps serving the current key, and the rollover
    is still under way (its next key kept)."""
    write_dane_config(elemta_setup, pebble)
    with dane_daemon(elemta_setup, pebble):
        current = tlsa(served_certificate(elemta_setup, cafile=pebble.root_path))
        assert elemta(elemta_setup, pebble, "dane", "rollover", "start").returncode == 0
        lineage_key = (elemta_setup.cache_dir / "certbot" / "config" / "live" / DOMAIN /
                       "privkey.pem").resolve()
        own_key = lineage_key.read_bytes()
        finish = subprocess.Popen(
            elemta_command("dane", "rollover", "finish", "--force", "-c",
                           str(elemta_setup.config_path)),
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            record = elemta_setup.cache_dir / "dane" / f"{DOMAIN}.lineage-key.json"
            wait_until(lambda: record.exists() and _certbot_child(finish.pid),
                       "finish's certbot running with the next key in the lineage", timeout=30)
            finish.send_signal(sig)
            assert finish.wait(30) != 0
        finally:
            if finish.poll() is None:
                finish.kill()
                finish.wait()
        swapped = lineage_key.read_bytes() != own_key
        assert swapped == (sig == signal.SIGKILL)  # SIGTERM: put back before it ended
        renewed = elemta(elemta_setup, pebble, "cert", "renew")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        assert ("put certbot's own key back" in renewed.stdout) == swapped
        assert lineage_key.read_bytes() == own_key
        assert tlsa(served_certificate(elemta_setup, cafile=pebble.root_path)) == current
        status = elemta(elemta_setup, pebble, "dane", "status")
        assert "next:" in status.stdout and "rollover started" in status.stdout
