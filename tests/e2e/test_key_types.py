"""End to end with Pebble: a changed [tls.letsencrypt] key_type takes effect at the daemon's
next renewal (a new key of the new type), and key_type = "ecdsa+rsa" serves two
certificates from one daemon: a client that takes only RSA gets the RSA one, a client that
takes only ECDSA the ECDSA one, each with its own chain."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.dnsserver import ZoneResolver, running_dns_server
from tests.e2e.conftest import StartPebble
from tests.e2e.pebble import Pebble
from tests.e2e.test_auto_acquire import DOMAIN, served_certificate, write_config
from tests.e2e.test_dane import elemta, tlsa, write_dane_config, zone
from tests.support import Setup, running_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIFETIME = 45  # seconds: the daemon's renewal is due 30 s after issuance


def with_key_type(setup: Setup, key_type: str) -> None:
    text = setup.config_path.read_text()
    setup.config_path.write_text(text.replace("[tls.letsencrypt]\n",
                                              f"[tls.letsencrypt]\nkey_type = \"{key_type}\"\n", 1))


def test_changed_key_type_takes_effect_at_the_next_renewal(start_pebble: StartPebble,
                                                           elemta_setup: Setup) -> None:
    """An ECDSA certificate, then key_type = "rsa" in elemta.toml: the daemon's next renewal
    makes a new RSA key (logged), and the certificate served has it."""
    pebble = start_pebble(http_port=elemta_setup.http_port, validity_seconds=LIFETIME)
    write_config(elemta_setup, pebble, renewal_days=30, check_interval="10s")
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with running_daemon(elemta_setup, env=env) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        first = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert isinstance(first.public_key(), ec.EllipticCurvePublicKey)
    with_key_type(elemta_setup, "rsa")
    with running_daemon(elemta_setup, env=env) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} renewed", timeout=LIFETIME + 40)
        renewed = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert isinstance(renewed.public_key(), rsa.RSAPublicKey)
        assert "has an ECDSA key but [tls.letsencrypt] key_type asks for RSA: its next renewal " \
               "makes a new RSA key" in daemon.log()


def handshake_tls12(setup: Setup, pebble: Pebble, ciphers: str) -> x509.Certificate:
    """The certificate a TLS 1.2 client offering only ``ciphers`` gets on the SMTPS port
    (its chain verified against Pebble's root)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pebble.root_path))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", setup.smtps_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def openssl_tls13(setup: Setup, pebble: Pebble, sigalgs: str) -> str:
    """`openssl s_client` over TLS 1.3 offering only ``sigalgs``, verifying the chain."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{setup.smtps_port}", "-tls1_3",
         "-servername", DOMAIN, "-sigalgs", sigalgs, "-CAfile", str(pebble.root_path),
         "-verify_return_error", "-verify_hostname", DOMAIN],
        input="", capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verify return code: 0 (ok)" in done.stdout, done.stdout
    return done.stdout


def test_ecdsa_and_rsa_served_side_by_side(pebble: Pebble, elemta_setup: Setup) -> None:
    """key_type = "ecdsa+rsa": the daemon obtains both certificates, and RSA-only and
    ECDSA-only clients (TLS 1.2 suites, TLS 1.3 signature algorithms) each get theirs,
    with a chain that verifies."""
    write_config(elemta_setup, pebble)
    with_key_type(elemta_setup, "ecdsa+rsa")
    with running_daemon(elemta_setup, env={"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}) as daemon:
        daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        daemon.wait_for_log(f"RSA certificate for {DOMAIN} obtained", timeout=90)
        daemon.wait_for_log("are served together", timeout=30)
        assert (elemta_setup.cache_dir / "live" / f"{DOMAIN}.rsa.pem").is_file()
        by_rsa = handshake_tls12(elemta_setup, pebble, "ECDHE-RSA-AES128-GCM-SHA256")
        by_ecdsa = handshake_tls12(elemta_setup, pebble, "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert isinstance(by_rsa.public_key(), rsa.RSAPublicKey)
        assert isinstance(by_ecdsa.public_key(), ec.EllipticCurvePublicKey)
        assert by_rsa.serial_number != by_ecdsa.serial_number
        rsa_out = openssl_tls13(elemta_setup, pebble, "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384")
        assert "Peer signature type: RSA-PSS" in rsa_out, rsa_out
        ecdsa_out = openssl_tls13(elemta_setup, pebble, "ecdsa_secp256r1_sha256")
        assert "Peer signature type: ECDSA" in ecdsa_out, ecdsa_out
        # a client taking both gets the ECDSA certificate (the first)
        default = served_certificate(elemta_setup, cafile=pebble.root_path)
        assert default.serial_number == by_ecdsa.serial_number


def test_rsa_companion_with_dane_comes_through_a_rollover(pebble: Pebble,
                                                           elemta_setup: Setup) -> None:
    """With [tls.dane] enabled, key_type = "ecdsa+rsa" does not serve an RSA key nobody
    published: the daemon obtains the ECDSA certificate only and says why; a staged rollover
    then brings the RSA certificate with the key whose record was published first."""
    resolver = ZoneResolver(zone())
    with running_dns_server(resolver) as port:
        write_dane_config(elemta_setup, pebble, resolver=f"127.0.0.1:{port}")
        with_key_type(elemta_setup, "ecdsa+rsa")
        env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
        with running_daemon(elemta_setup, env=env) as daemon:
            daemon.wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
            daemon.wait_for_log("is not obtained by the daemon while [tls.dane] is enabled")
            assert not (elemta_setup.cache_dir / "live" / f"{DOMAIN}.rsa.pem").exists()
            current = tlsa(served_certificate(elemta_setup, cafile=pebble.root_path))
            started = elemta(elemta_setup, pebble, "dane", "rollover", "start")
            assert started.returncode == 0, started.stdout + started.stderr
            following = re.findall(r"IN TLSA (3 1 1 [0-9a-f]{64})    ; next key, ADD",
                                   started.stdout)
            assert len(following) == 2, started.stdout
            resolver.set_zone(zone(current, *following))
            done = elemta(elemta_setup, pebble, "dane", "rollover", "finish")
            assert done.returncode == 0, done.stdout + done.stderr
            by_rsa = handshake_tls12(elemta_setup, pebble, "ECDHE-RSA-AES128-GCM-SHA256")
            by_ecdsa = handshake_tls12(elemta_setup, pebble, "ECDHE-ECDSA-AES128-GCM-SHA256")
            assert isinstance(by_rsa.public_key(), rsa.RSAPublicKey)
            assert sorted([tlsa(by_ecdsa), tlsa(by_rsa)]) == sorted(following)
