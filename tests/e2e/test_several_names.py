"""End to end: adding and removing a name in elemta.toml ([tls.letsencrypt] extra_names)
makes the daemon, at its next check after a restart, obtain a new certificate for the new
name set from a real Pebble (certbot updating the same lineage), served and logged."""

from __future__ import annotations

import pytest
from cryptography import x509

from tests.e2e.pebble import EMAIL, Pebble
from tests.support import Setup, running_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DOMAIN = "mail.example.com"


def write(setup: Setup, pebble: Pebble, extra: list[str]) -> None:
    setup.write({"tls.letsencrypt": {"enabled": True, "email": EMAIL,
                                     "directory_url": pebble.directory_url, "extra_names": extra},
                 "tls.renewal": {"renewal_timeout": "60s"}})


def live_names(setup: Setup) -> list[str]:
    pem = (setup.cache_dir / "live" / f"{DOMAIN}.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----"):])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def test_name_added_then_removed_gets_a_new_certificate(pebble: Pebble, elemta_setup: Setup) -> None:
    """domain only -> + mx2.example.com -> without it again: each restart's first check logs
    the difference and obtains a certificate with exactly the configured names, in the same
    certbot lineage and live/ file."""
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    write(elemta_setup, pebble, [])
    with running_daemon(elemta_setup, env=env) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
    assert live_names(elemta_setup) == [DOMAIN]
    for extra, expected in ((["mx2.example.com"], "it does not cover mx2.example.com"),
                            ([], "it covers mx2.example.com, no longer in elemta.toml")):
        write(elemta_setup, pebble, extra)
        with running_daemon(elemta_setup, env=env) as daemon:
            daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
            assert expected in daemon.log(), daemon.log()
            assert "obtaining a new certificate for" in daemon.log()
        assert live_names(elemta_setup) == sorted([DOMAIN, *extra])
    renewal = elemta_setup.cache_dir / "certbot" / "config" / "renewal"
    assert sorted(p.name for p in renewal.iterdir()) == [f"{DOMAIN}.conf"]  # one lineage
