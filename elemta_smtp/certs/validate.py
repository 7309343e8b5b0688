"""Is a certificate bundle fit to serve? Pure checks that take "now" as a value.

Each check raises ``InvalidCertificate(bundle.path, reason)`` with one sentence
saying what is wrong and what to do.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from elemta_smtp.certs.bundle import CertificateBundle, common_name, dns_names
from elemta_smtp.certs.names import covers
from elemta_smtp.errors import InvalidCertificate

MIN_RSA_BITS = 2048
_CURVES = ("secp256r1", "secp384r1")


def check_bundle(bundle: CertificateBundle, *, now: datetime, required_name: str | None) -> None:
    """Raise ``InvalidCertificate`` unless the bundle can be served for ``required_name`` at ``now``."""
    check_structure(bundle)
    check_time(bundle, now)
    if required_name is not None:
        check_name(bundle, required_name)


def check_structure(bundle: CertificateBundle) -> None:
    """The time-independent checks: key type, key matches leaf, chain in order and present."""
    check_key_type(bundle)
    check_key_matches(bundle)
    check_chain_order(bundle)
    check_chain_present(bundle)


def check_key_type(bundle: CertificateBundle) -> None:
    """Only ECDSA (P-256, P-384) and RSA (2048 bits or more) keys are served."""
    key = bundle.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVES:
            raise InvalidCertificate(bundle.path, f"ECDSA curve {key.curve.name} is not served: "
                                                  "use P-256 (certbot --key-type ecdsa) or P-384")
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidCertificate(bundle.path, f"RSA key of {key.key_size} bits is too weak: "
                                                  f"use at least {MIN_RSA_BITS} bits, or ECDSA P-256")
    else:
        raise InvalidCertificate(bundle.path, f"{type(key).__name__} keys are not served: "
                                              "use an ECDSA P-256 or RSA key")


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_key_matches(bundle: CertificateBundle) -> None:
    """The private key must be the one the leaf certificate was issued for."""
    if _spki(bundle.key.public_key()) != _spki(bundle.leaf.public_key()):
        raise InvalidCertificate(bundle.path, "the private key does not belong to the first certificate "
                                              f"({_describe(bundle.leaf)}): pair the certificate with the "
                                              "key it was requested with, leaf certificate first")


def check_chain_order(bundle: CertificateBundle) -> None:
    """Each certificate must be issued (name and signature) by the one after it."""
    certs = bundle.certificates
    for number, (cert, issuer) in enumerate(itertools.pairwise(certs), start=1):
        hint = ("put the leaf first, then its issuer, then that one's issuer "
                "(the order of certbot's fullchain.pem)")
        if cert.issuer != issuer.subject and not any(c.subject == cert.issuer for c in certs):
            raise InvalidCertificate(bundle.path, f"chain incomplete: certificate {number} "
                                                  f"({_describe(cert)}) is issued by "
                                                  f"{common_name(cert.issuer)!r}, which is not in the "
                                                  f"file (certificate {number + 1} is "
                                                  f"{common_name(issuer.subject)!r}); {_MISSING_HINT}")
        if cert.issuer != issuer.subject:
            raise InvalidCertificate(bundle.path, f"chain out of order: certificate {number} "
                                                  f"({_describe(cert)}) is issued by "
                                                  f"{common_name(cert.issuer)!r}, but certificate "
                                                  f"{number + 1} is {common_name(issuer.subject)!r}; {hint}")
        try:
            cert.verify_directly_issued_by(issuer)
        except InvalidSignature:
            raise InvalidCertificate(bundle.path, f"certificate {number} ({_describe(cert)}) is not signed "
                                                  f"by certificate {number + 1} although the names match; "
                                                  "use the issuer certificate your CA sent") from None
        except (ValueError, TypeError):
            continue  # a signature algorithm cryptography cannot check: names matched, accept


_MISSING_HINT = ("clients that verify fail with \"unable to verify the first certificate\": "
                 "write the key, the leaf and the issuer certificates your CA sent (certbot's "
                 "fullchain.pem, not cert.pem) into the file again")


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issued by itself: the issuer name is its own subject and its own key signed it."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except InvalidSignature:
        return False
    except (ValueError, TypeError):
        return True  # a signature algorithm cryptography cannot check: the names matched
    return True


def check_chain_present(bundle: CertificateBundle) -> None:
    """A leaf that is not self-signed must be followed by its issuer: a leaf alone, issued
    by a CA, is a truncated file or cert.pem in place of fullchain.pem. (The last
    certificate's issuer, the root, may be absent: clients have it.)"""
    leaf = bundle.leaf
    if bundle.chain or is_self_signed(leaf):
        return
    raise InvalidCertificate(bundle.path, f"chain missing: the certificate ({_describe(leaf)}) is "
                                          f"issued by {common_name(leaf.issuer)!r}, which is not in "
                                          f"the file (truncated file?); {_MISSING_HINT}")


def check_time(bundle: CertificateBundle, now: datetime) -> None:
    """The leaf must be valid at ``now`` (an aware datetime)."""
    leaf = bundle.leaf
    if now < leaf.not_valid_before_utc:
        raise InvalidCertificate(bundle.path, f"not valid yet: valid from {_when(leaf.not_valid_before_utc)}"
                                              f" (now {_when(now)}); check the system clock")
    if now > leaf.not_valid_after_utc:
        raise InvalidCertificate(bundle.path, f"expired on {_when(leaf.not_valid_after_utc)}: renew it "
                                              "(elemta renews itself when [tls.letsencrypt] enabled; "
                                              "or run certbot renew)")


def check_name(bundle: CertificateBundle, name: str) -> None:
    """The leaf's subjectAltName DNS names must cover ``name`` (a wildcard covers one label)."""
    names = dns_names(bundle.leaf)
    if not covers(names, name):
        listed = ", ".join(names) if names else "no DNS names at all"
        raise InvalidCertificate(bundle.path, f"the certificate is for {listed}, not {name}: "
                                              f"request one that includes {name}")


def _describe(cert: x509.Certificate) -> str:
    names = dns_names(cert)
    return ", ".join(names) if names else common_name(cert.subject)


def _when(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
