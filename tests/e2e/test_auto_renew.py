"""End to end: the daemon's own renewal timer against a Pebble that issues
short-lived certificates. The certificate crosses the renewal threshold while
the daemon runs; the daemon renews it once through certbot, serves the new one
with the same pid (loaded once: its own certbot sends it no SIGHUP), mails
"renewed", and does not renew again at the next checks
even though ``renewal_days`` (30) is far longer than the certificate's lifetime."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import StartPebble
from tests.e2e.test_auto_acquire import (
    DOMAIN,
    assert_reloaded_once,
    maildir_messages,
    served_certificate,
    write_config,
)
from tests.support import Setup, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIFETIME = 45  # seconds: renewal window = a third = 15 s, so renewal is due 30 s after issuance
CHECK = 10  # check_interval, seconds (the smallest allowed)


def test_daemon_renews_a_short_certificate_once_on_its_timer(start_pebble: StartPebble,
                                                             elemta_setup: Setup) -> None:
    pebble = start_pebble(http_port=elemta_setup.http_port, validity_seconds=LIFETIME)
    write_config(elemta_setup, pebble, renewal_days=30, check_interval=f"{CHECK}s",
                 auto_renew=True)
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        first = served_certificate(elemta_setup, cafile=pebble.root_path)
        lifetime = first.not_valid_after_utc - first.not_valid_before_utc
        assert lifetime.total_seconds() <= LIFETIME + 1, lifetime  # Pebble issued a short one
        # Nothing is renewed while the certificate is outside its window.
        assert "renewing the certificate" not in daemon.log()

        daemon.wait_for_log(f"certificate for {DOMAIN} renewed", timeout=LIFETIME + 3 * CHECK)
        renewed_at = time.monotonic()
        second = served_certificate(elemta_setup, cafile=pebble.root_path)
        old_hex, new_hex = format(first.serial_number, "x"), format(second.serial_number, "x")
        assert new_hex != old_hex
        assert f"serial {old_hex} -> {new_hex}" in daemon.log()
        assert_reloaded_once(elemta_setup, daemon.log(), second.serial_number)
        assert second.not_valid_after_utc > first.not_valid_after_utc
        log = daemon.log()
        # The renewal ran when the time left was inside the capped window, not before.
        left = re.search(rf"renewing the certificate for {DOMAIN} \(serial {old_hex}\): "
                         r"(\d+) seconds? left, renewal window (\d+) seconds", log)
        assert left is not None, log
        assert int(left.group(2)) == int(lifetime.total_seconds() / 3)
        assert int(left.group(1)) <= int(left.group(2))
        assert "renewal_days = 30 is more than a third of this certificate's" in log

        wait_until(lambda: len(maildir_messages(elemta_setup)) >= 2,
                   "the renewed notice", timeout=30, daemon=daemon)
        messages = maildir_messages(elemta_setup)
        assert b"Subject: TLS certificate for mail.example.com issued" in messages[0]
        assert b"renewed" in messages[1]
        assert new_hex.encode() in messages[1]

        # No loop: the next checks (the new certificate is outside its window again) renew
        # nothing, and the daemon is the same process throughout.
        while time.monotonic() < renewed_at + 1.5 * CHECK:
            time.sleep(0.5)
        assert daemon.log().count("renewing the certificate") == 1, daemon.log()
        assert daemon.process.poll() is None
        assert served_certificate(elemta_setup).serial_number == second.serial_number
        assert len(maildir_messages(elemta_setup)) == 2  # no expiry alarm for a healthy renewal
