"""The self-signed fallback certificate, so TLS works before any real certificate exists.

It lives at ``<cache_dir>/bootstrap.pem`` (never in live/), is generated once and
reused, and is made again only when it is unreadable, expired or for another name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from elemta_smtp.cache.layout import bootstrap_path
from elemta_smtp.cache.live import read_bundle, write_bootstrap
from elemta_smtp.certs.validate import check_bundle
from elemta_smtp.errors import InvalidCertificate

BOOTSTRAP_ORGANIZATION = "elemta self-signed bootstrap"
LIFETIME = timedelta(days=365)
#: regenerate a little before the end, so a reload never picks a nearly dead one
RENEW_BEFORE = timedelta(days=7)


def ensure_bootstrap(cache_dir: Path, hostname: str, now: datetime) -> Path:
    """Return ``<cache_dir>/bootstrap.pem``, generating it if missing, unusable or expiring."""
    path = bootstrap_path(cache_dir)
    try:
        bundle = read_bundle(path)
        check_bundle(bundle, now=now + RENEW_BEFORE, required_name=hostname)
    except InvalidCertificate:
        return write_bootstrap(cache_dir, make_self_signed(hostname, now))
    return path


def make_self_signed(hostname: str, now: datetime) -> bytes:
    """A fresh ECDSA P-256 key and a self-signed certificate for ``hostname``, as one PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, hostname),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, BOOTSTRAP_ORGANIZATION),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def is_bootstrap(cert: x509.Certificate) -> bool:
    """Was this certificate made by ``make_self_signed``?"""
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return cert.issuer == cert.subject and any(o.value == BOOTSTRAP_ORGANIZATION for o in orgs)
