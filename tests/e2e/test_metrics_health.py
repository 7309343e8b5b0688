"""End to end: the health endpoint of a daemon that starts on its bootstrap certificate
says 503 with the reason, and 200 once the certificate from a real Pebble is served; the
scrape shows the acquisition, the HTTP-01 answers served and the new certificate."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.pebble import EMAIL, Pebble
from tests.support import Setup, free_port, http_get, running_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DOMAIN = "mail.example.com"


def samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, body = http_get(port, "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_health_flips_from_bootstrap_to_the_pebble_certificate(pebble: Pebble,
                                                               elemta_setup: Setup) -> None:
    """503 naming the bootstrap certificate while it is served, 200 naming Pebble's
    certificate once it is; elemta_healthy follows, and the acquisition is counted."""
    port = free_port()
    elemta_setup.write({
        "tls.letsencrypt": {"enabled": True, "email": EMAIL, "directory_url": pebble.directory_url},
        "tls.renewal": {"renewal_timeout": "60s"},
        "notify": {"recipients": ["postmaster@example.com"]},
        "metrics": {"listen_addr": f"127.0.0.1:{port}"},
    })
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with running_daemon(elemta_setup, env=env) as daemon:
        # certbot, a child Python importing certbot, takes well over a second to get a
        # certificate: the daemon answers on its bootstrap certificate meanwhile
        status, _, body = http_get(port, "/healthz")
        verdict = json.loads(body)
        assert (status, verdict["status"]) == (503, "unhealthy"), verdict
        assert "self-signed bootstrap certificate" in verdict["reason"]
        before = samples(port)
        assert before[("elemta_healthy", frozenset())] == 0
        assert any(name == "elemta_certificate_not_after_seconds"
                   and ("source", "bootstrap") in labels for name, labels in before)

        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, "/healthz answering 200",
                   daemon=daemon)
        daemon.wait_for_log('mailed notice "')  # the "issued" notice, after the check
        verdict = json.loads(http_get(port, "/healthz")[2])
        assert verdict["status"] == "ok" and verdict["certificate"]["source"] == "live"
        assert verdict["certificate"]["names"] == [DOMAIN]
        after = samples(port)
        assert after[("elemta_healthy", frozenset())] == 1
        by_name = frozenset({("name", DOMAIN)})
        assert after[("elemta_certificate_acquisition_attempts_total", by_name)] == 1
        assert after[("elemta_certificate_acquisition_failures_total", by_name)] == 0
        assert after[("elemta_acme_challenges_served_total", frozenset({("type", "http-01")}))] >= 1
        assert after[("elemta_notices_sent_total", frozenset({("kind", "issued")}))] == 1
        live = frozenset({("name", DOMAIN), ("source", "live"), ("key_type", "ecdsa-p256")})
        assert after[("elemta_certificate_days_left", live)] > 1
