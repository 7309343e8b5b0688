"""Test certificates made with ``cryptography``: a small CA and leaf certificates.

    ca = make_ca()                          # a root CA (ECDSA P-256)
    sub = make_ca("Test Intermediate", parent=ca)
    leaf = make_leaf(sub, ["mail.example.com"])
    leaf.combined_pem    # key + leaf + chain: the live/<name>.pem format
    leaf.key_pem, leaf.fullchain_pem        # what write_certificate takes
    leaf.serial                              # to compare with what a server serves
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

KeyType = Literal["ecdsa", "rsa", "ecdsa-p384", "rsa-1024"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def make_key(key_type: KeyType = "ecdsa") -> CertificateIssuerPrivateKeyTypes:
    """A fresh private key: ECDSA P-256 ("ecdsa"), P-384, RSA 2048 ("rsa") or weak RSA 1024."""
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=1024 if key_type == "rsa-1024" else 2048)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CA:
    """A certificate authority; ``chain`` is its own certificate and its issuers', root excluded
    unless this is the root."""

    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate
    parent: CA | None = None

    @property
    def name(self) -> x509.Name:
        return self.cert.subject

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Issuer certificates a server sends after a leaf issued by this CA (no root)."""
        if self.parent is None:
            return ()
        return (self.cert, *self.parent.chain)


def make_ca(common_name: str = "elemta Test Root CA", parent: CA | None = None,
            key_type: KeyType = "ecdsa", *, not_before: datetime | None = None,
            not_after: datetime | None = None, organization: str | None = None) -> CA:
    """A root CA, or an intermediate issued by ``parent``."""
    now = utcnow()
    key = make_key(key_type)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attrs)
    issuer_key = parent.key if parent else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.name if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=30))
        .not_valid_after(not_after or now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return CA(key, cert, parent)


@dataclass(frozen=True)
class Leaf:
    """A server certificate with its key and chain, as PEM bytes."""

    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def chain_pem(self) -> bytes:
        return b"".join(cert_pem(c) for c in self.chain)

    @property
    def fullchain_pem(self) -> bytes:
        """Leaf then issuers: certbot's fullchain.pem."""
        return self.cert_pem + self.chain_pem

    @property
    def combined_pem(self) -> bytes:
        """Key + leaf + issuers: the live/<name>.pem format."""
        return self.key_pem + self.fullchain_pem


def make_leaf(ca: CA, names: Sequence[str], not_before: datetime | None = None,
              not_after: datetime | None = None, key_type: KeyType = "ecdsa") -> Leaf:
    """A server certificate for ``names`` (subjectAltName DNS names) issued by ``ca``.

    Defaults: valid from a day ago for 90 days. The chain is the CA's (intermediates);
    for a leaf issued by a root directly it is the root, as a server must then send it.
    """
    now = utcnow()
    key = make_key(key_type)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")]))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=89))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Leaf(key, cert, ca.chain or (ca.cert,))


# --- an in-memory TLS client, to see what a server connection presents ---

@dataclass(frozen=True)
class Handshake:
    """What a client saw: the server's leaf, the protocol and the cipher."""

    cert: x509.Certificate
    protocol: str
    cipher: str | None

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def memory_handshake(server: SSL.Connection, server_name: str | None = None,
                     client_context: SSL.Context | None = None) -> Handshake:
    """Run a TLS handshake between ``server`` (e.g. from ``serverConnectionForTLS``) and an
    unverifying client through memory BIOs; no sockets, no reactor."""
    server.set_accept_state()
    client = SSL.Connection(client_context or SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    if server_name:
        client.set_tlsext_host_name(server_name.encode("ascii"))
    done = {"client": False, "server": False}
    for _ in range(50):
        for side, conn in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    conn.do_handshake()
                    done[side] = True
                except SSL.WantReadError:
                    pass
        for src, dst in ((client, server), (server, client)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            dst.bio_write(data)
        if all(done.values()):
            break
    # (types-pyOpenSSL 24 stubs predate as_cryptography)
    cert: x509.Certificate | None = client.get_peer_certificate(as_cryptography=True)  # type: ignore[call-arg, assignment, unused-ignore]
    if not all(done.values()) or cert is None:
        raise AssertionError("TLS handshake did not complete")
    return Handshake(cert, client.get_protocol_version_name(), client.get_cipher_name())
