"""TLS-ALPN-01 pieces of the cache contract (cache/tlsalpn.py, cache/challenges.py): the RFC
8737 validation certificate, the ALPN decision, a real in-memory handshake through the
shared select callback, and where the key authorizations are written and read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from OpenSSL import SSL

from elemta_smtp.cache.challenges import alpn_answer_path, read_alpn_answer, write_alpn_answer
from elemta_smtp.cache.tlsalpn import (
    ACME_IDENTIFIER,
    AlpnChoice,
    Refused,
    ValidationCache,
    alpn_select,
    choose,
    validates,
    validation_certificate,
)
from elemta_smtp.errors import ChallengeError
from tests.certs import make_ca, make_leaf, memory_handshake

KEY_AUTHZ = b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PENDING = {"mail.example.com": KEY_AUTHZ}


def test_validation_certificate_is_rfc8737() -> None:
    """Self-signed, the name as its only SAN, the critical acmeIdentifier extension holding
    the DER OCTET STRING of SHA-256(key authorization)."""
    import hashlib

    made = validation_certificate("mail.example.com", KEY_AUTHZ)
    cert = made.certificate
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.DNSName("mail.example.com")]
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(KEY_AUTHZ).digest()  # type: ignore[attr-defined]
    assert validates(cert, "mail.example.com", KEY_AUTHZ) is None


def test_validates_names_what_is_wrong() -> None:
    """The self-check's verdict says why a certificate is not the expected one."""
    made = validation_certificate("mail.example.com", KEY_AUTHZ)
    assert "does not match" in (validates(made.certificate, "mail.example.com", b"other") or "")
    assert "not only other.example.com" in (validates(made.certificate, "other.example.com", KEY_AUTHZ) or "")
    leaf = make_leaf(make_ca(), ["mail.example.com"]).cert
    assert "no acmeIdentifier" in (validates(leaf, "mail.example.com", KEY_AUTHZ) or "")


def test_validation_cache_reuses_and_is_bounded() -> None:
    """The same (name, key authorization) gets the same certificate; the oldest is dropped."""
    made: list[str] = []

    def make(name: str, authz: bytes) -> object:
        made.append(name)
        return validation_certificate(name, authz)

    cache = ValidationCache(size=2, make=make)  # type: ignore[arg-type]
    first = cache.get("a.example", b"x")
    assert cache.get("a.example", b"x") is first
    cache.get("b.example", b"x")
    cache.get("c.example", b"x")
    cache.get("a.example", b"x")
    assert made == ["a.example", "b.example", "c.example", "a.example"]


@pytest.mark.parametrize(("offered", "name", "expected"), [
    ([b"acme-tls/1"], "mail.example.com", AlpnChoice(b"acme-tls/1", "mail.example.com", KEY_AUTHZ)),
    ([b"acme-tls/1"], "MAIL.example.com.", AlpnChoice(b"acme-tls/1", "mail.example.com", KEY_AUTHZ)),
    ([b"acme-tls/1"], "other.example.com", AlpnChoice(
        refuse="acme-tls/1 for other.example.com, which has no pending TLS-ALPN-01 challenge")),
    ([b"acme-tls/1"], None, AlpnChoice(refuse="acme-tls/1 without a server name (SNI)")),
    ([b"http/1.1", b"acme-tls/1"], "mail.example.com",
     AlpnChoice(b"acme-tls/1", "mail.example.com", KEY_AUTHZ)),
    ([b"h2", b"http/1.1"], "mail.example.com", AlpnChoice(b"http/1.1")),
    ([b"h2"], "mail.example.com", AlpnChoice()),
])
def test_alpn_decision(offered: list[bytes], name: str | None, expected: AlpnChoice) -> None:
    """acme-tls/1: the validation certificate for a pending SNI name, else refused; else
    http/1.1 when offered, else no protocol."""
    assert choose(offered, name, lambda n: PENDING.get(n or "")) == expected


def server(pending: dict[str, bytes]) -> SSL.Connection:
    leaf = make_leaf(make_ca(), ["mail.example.com"])
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(leaf.cert)  # type: ignore[arg-type, unused-ignore]
    context.use_privatekey(leaf.key)  # type: ignore[arg-type, unused-ignore]
    cache = ValidationCache()
    context.set_alpn_select_callback(lambda c, o: alpn_select(c, o, lambda n: pending.get(n or ""), cache))
    return SSL.Connection(context, None)


def client(protocols: list[bytes]) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_alpn_protos(protocols)
    return context


def test_handshake_with_acme_tls_presents_the_validation_certificate() -> None:
    """Through the shared callback a real handshake presents the validation certificate for a
    pending name, and elemta's own certificate to an http/1.1 client."""
    got = memory_handshake(server(PENDING), "mail.example.com", client([b"acme-tls/1"]))
    assert validates(got.cert, "mail.example.com", KEY_AUTHZ) is None
    normal = memory_handshake(server(PENDING), "mail.example.com", client([b"http/1.1"]))
    assert validates(normal.cert, "mail.example.com", KEY_AUTHZ) is not None


def test_handshake_for_a_name_without_challenge_is_refused() -> None:
    """acme-tls/1 for a name with nothing pending ends the handshake with ``Refused``."""
    with pytest.raises(Refused, match="no pending TLS-ALPN-01 challenge"):
        memory_handshake(server({}), "mail.example.com", client([b"acme-tls/1"]))


def test_answers_are_written_public_and_read_back(tmp_path: Path) -> None:
    """One file per name (normalized), 0644 in a 0755 folder whatever the umask; read back
    stripped; names that are no DNS name are refused when writing and never read."""
    alpn_dir = tmp_path / "cache" / "tls-alpn-01"
    old = os.umask(0o077)
    try:
        path = write_alpn_answer(alpn_dir, "Mail.Example.com.", KEY_AUTHZ.decode())
    finally:
        os.umask(old)
    assert path == alpn_dir / "mail.example.com"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(alpn_dir.stat().st_mode) == 0o755
    assert read_alpn_answer(alpn_dir, "MAIL.example.com") == KEY_AUTHZ
    assert read_alpn_answer(alpn_dir, None) is None
    assert read_alpn_answer(alpn_dir, "../cache/tls-alpn-01/mail.example.com") is None
    assert read_alpn_answer(alpn_dir, "other.example.com") is None
    for bad in ("../etc/passwd", "*.example.com", "a/b"):
        with pytest.raises(ChallengeError, match="not a DNS name"):
            alpn_answer_path(alpn_dir, bad)
