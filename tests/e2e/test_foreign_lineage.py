"""End to end: a certificate obtained the way the README says, with certbot's own
folders (not elemta's ``<cache_dir>/certbot``), is renewed before it expires — by the
daemon's own timer, and by the packaged systemd timer's command — against Pebble
issuing short-lived certificates. The same daemon process serves the renewed
certificate, and exactly one "renewed" mail arrives (no "issued", no "FAILED")."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shlex
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.conftest import StartPebble
from tests.e2e.pebble import Pebble
from tests.e2e.test_auto_acquire import DOMAIN, maildir_messages, served_certificate, write_config
from tests.support import Setup, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def readme_certonly(pebble: Pebble, setup: Setup, folders: Path) -> x509.Certificate:
    """README's "Get a certificate and put it in service" command, with certbot's folders
    under ``folders`` (as /etc/letsencrypt would be) and the test CA's options."""
    pebble.certbot("certonly", "-a", "elemta", "-i", "elemta", "-d", DOMAIN,
                   "--elemta-config", str(setup.config_path), certbot_dir=folders)
    return x509.load_pem_x509_certificate((pebble.live(DOMAIN, folders) / "cert.pem").read_bytes())


def mails(setup: Setup) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=email.policy.default)
            for raw in maildir_messages(setup)]


def hexserial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def test_daemon_renews_a_lineage_in_certbots_own_folders(start_pebble: StartPebble,
                                                         elemta_setup: Setup,
                                                         tmp_path: Path) -> None:
    """`certbot certonly -a elemta -i elemta` into other certbot folders, then the daemon's
    own renewal renews that lineage there before it expires: same pid, one "renewed" mail."""
    lifetime = 45  # renewal window: a third, 15 s
    pebble = start_pebble(http_port=elemta_setup.http_port, validity_seconds=lifetime)
    write_config(elemta_setup, pebble, renewal_days=30, check_interval="10s", auto_renew=True)
    folders = tmp_path / "letsencrypt"
    first = readme_certonly(pebble, elemta_setup, folders)  # no daemon yet: the plugin answers
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with running_daemon(elemta_setup, env=env) as daemon:
        assert served_certificate(elemta_setup, cafile=pebble.root_path).serial_number == \
            first.serial_number
        daemon.wait_for_log(f"certificate for {DOMAIN} renewed", timeout=lifetime + 20)
        second = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert second.serial_number != first.serial_number
        assert second.not_valid_after_utc > first.not_valid_after_utc
        assert daemon.process.poll() is None  # the same process throughout
        log = daemon.log()
        assert f"serial {hexserial(first)} -> {hexserial(second)}" in log
        assert "No certificate found" not in log and "obtaining a certificate" not in log
        # renewed in the lineage's own folders; elemta's folders were never used
        assert (folders / "config" / "archive" / DOMAIN / "cert2.pem").is_file()
        assert not (elemta_setup.cache_dir / "certbot" / "config" / "renewal").exists()
        wait_until(lambda: len(maildir_messages(elemta_setup)) >= 1,
                   "the renewed notice", timeout=30, daemon=daemon)
        time.sleep(1)  # a second mail (issued? failed?) would arrive right after
        subjects = [m["Subject"] for m in mails(elemta_setup)]
        assert subjects == [f"TLS certificate for {DOMAIN} renewed"], subjects


def timer_command(setup: Setup) -> list[str]:
    """ExecStart of packaging/elemta-certbot-renew.service, pointed at this checkout's elemta
    and the test's elemta.toml."""
    text = (PACKAGING / "elemta-certbot-renew.service").read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/usr/local/bin/elemta" and "/etc/elemta/elemta.toml" in argv
    return [sys.executable, "-m", "elemta_smtp",
            *(str(setup.config_path) if a == "/etc/elemta/elemta.toml" else a for a in argv[1:])]


def test_packaged_timer_renews_a_lineage_in_certbots_own_folders(start_pebble: StartPebble,
                                                                 elemta_setup: Setup,
                                                                 tmp_path: Path) -> None:
    """The packaged timer's command renews a lineage in other certbot folders once certbot
    says it is due (and does nothing before), and the running daemon serves it."""
    lifetime = 60  # certbot renews certificates shorter than 10 days at half their lifetime
    pebble = start_pebble(http_port=elemta_setup.http_port, validity_seconds=lifetime)
    write_config(elemta_setup, pebble, auto_renew=False)
    folders = tmp_path / "letsencrypt"
    first = readme_certonly(pebble, elemta_setup, folders)
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        early = subprocess.run(timer_command(elemta_setup), capture_output=True, text=True,
                               timeout=120, env=env, check=False)
        assert early.returncode == 0, early.stdout + early.stderr
        assert "not renewed: certbot says it is not due yet" in early.stdout
        assert f"checking {DOMAIN} in {folders / 'config'}" in early.stdout
        half = first.not_valid_before_utc.timestamp() + lifetime / 2 + 1
        time.sleep(max(0.0, half - time.time()))
        due = subprocess.run(timer_command(elemta_setup), capture_output=True, text=True,
                             timeout=120, env=env, check=False)
        assert due.returncode == 0, due.stdout + due.stderr
        match = re.search(r"renewed: serial (\w+) -> (\w+)", due.stdout)
        assert match is not None and match.group(1) == hexserial(first), due.stdout
        second = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert hexserial(second) == match.group(2)
        assert f"the daemon (pid {daemon.pid}) serves serial {match.group(2)}" in due.stdout
        wait_until(lambda: len(maildir_messages(elemta_setup)) >= 1,
                   "the renewed notice", timeout=30, daemon=daemon)
        assert [m["Subject"] for m in mails(elemta_setup)] == [
            f"TLS certificate for {DOMAIN} renewed"]
