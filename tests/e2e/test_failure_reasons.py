"""End to end: when the CA cannot validate (the daemon's ``http_addr`` is not where the
CA connects), the daemon's log line and the failure mail carry the CA's own detail and
the plugin's hint, not only certbot's generic "Some challenges have failed."."""

from __future__ import annotations

import email
import email.policy

import pytest

from tests.e2e.conftest import StartPebble
from tests.e2e.test_auto_acquire import DOMAIN, write_config
from tests.support import Setup, free_port, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_wrong_http_addr_reports_the_cas_detail_and_the_hint(start_pebble: StartPebble,
                                                             elemta_setup: Setup) -> None:
    """Pebble fetches HTTP-01 answers from a port nothing listens on: the log and the
    acquire-failed mail name the CA's detail (connection refused) and the plugin's hint."""
    nowhere = free_port()
    pebble = start_pebble(http_port=nowhere)
    write_config(elemta_setup, pebble)
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"could not obtain a certificate for {DOMAIN}", timeout=90)
        [line] = [line for line in daemon.log().splitlines()
                  if f"could not obtain a certificate for {DOMAIN}" in line]
        assert "Some challenges have failed." in line
        assert f"Detail: Get \"http://{DOMAIN}:{nowhere}/.well-known/acme-challenge/" in line
        assert "connection refused" in line
        assert "Hint: The Certificate Authority could not download the challenge answers" in line
        assert "still serving the self-signed bootstrap certificate" in line
        assert "Saving debug log" not in line
        inbox = elemta_setup.maildir_root / "example.com" / "postmaster" / "new"
        wait_until(lambda: inbox.is_dir() and any(inbox.iterdir()),
                   "the acquire-failed notice", timeout=30, daemon=daemon)
        [path] = list(inbox.iterdir())
        mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert mail["Subject"] == f"Could not obtain a TLS certificate for {DOMAIN}"
        body = mail.get_body()
        assert body is not None
        text = body.get_content()
        assert "Detail: Get" in text and "connection refused" in text
        assert "Hint: The Certificate Authority could not download" in text
        assert "Starting factory" not in daemon.log()  # one line per event, no Twisted chatter
