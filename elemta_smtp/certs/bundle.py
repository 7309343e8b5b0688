"""A parsed combined PEM (private key + leaf + chain) and facts about its certificates.

Pure: bytes in, objects out. Everything that can be wrong with the bytes is an
``InvalidCertificate`` naming the file and the reason, never a crash.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from elemta_smtp.errors import InvalidCertificate

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_KEY_LABELS = {b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"}
_MAX_BYTES = 1024 * 1024


class CertificateBundle(NamedTuple):
    """What one live/<name>.pem holds: the key, the leaf, then its issuers in order.

    (A NamedTuple: immutable like a frozen dataclass, cheaper to create at import, which
    `elemta cert info` pays on every run.)"""

    path: Path
    key: PrivateKeyTypes
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return (self.leaf, *self.chain)


def parse_bundle(data: bytes, path: Path) -> CertificateBundle:
    """Parse PEM blocks: exactly one unencrypted private key and one or more certificates.

    The first certificate is the leaf. Text outside the blocks is ignored; a block
    that begins but never ends (a half-written file), or text after the last block
    that looks like the start of one (``-----BEG``, ``---``: a file cut off there), is
    an error.
    """
    if len(data) > _MAX_BYTES:
        raise InvalidCertificate(path, f"file is {len(data)} bytes, too big for a certificate bundle")
    blocks = list(_BLOCK.finditer(data))
    leftover = _BLOCK.sub(b"", data)
    if b"-----BEGIN" in leftover or b"-----END" in leftover:
        raise InvalidCertificate(path, "a PEM block is cut short (half-written or truncated file?): "
                                       "write the file again, replacing it atomically")
    if blocks and (tail := cut_off_tail(data[blocks[-1].end():])) is not None:
        raise InvalidCertificate(path, f"the file is cut off: it ends in \"{tail}\" after the last "
                                       "complete PEM block, the start of a block that is missing "
                                       "(truncated copy?): write the file again, replacing it "
                                       "atomically")
    keys = [m for m in blocks if m.group(1) in _KEY_LABELS]
    certs = [m for m in blocks if m.group(1) == b"CERTIFICATE"]
    if b"ENCRYPTED PRIVATE KEY" in {m.group(1) for m in blocks} or any(
            b"ENCRYPTED" in m.group(2)[:200] for m in keys):
        raise InvalidCertificate(path, "the private key is encrypted: elemta needs it unencrypted "
                                       "(openssl pkey -in KEY -out KEY.plain), kept 0600")
    if not blocks:
        raise InvalidCertificate(path, "no PEM data found (expected a private key and certificates)")
    if len(keys) != 1:
        what = "no private key" if not keys else f"{len(keys)} private keys"
        raise InvalidCertificate(path, f"found {what}; expected exactly one, together with the "
                                       "certificates (or in [tls] key_file)")
    if not certs:
        raise InvalidCertificate(path, "found no CERTIFICATE block; expected the leaf and its chain")
    try:
        key = serialization.load_pem_private_key(keys[0].group(0), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidCertificate(path, f"the private key cannot be read: {_first_line(exc)}") from None
    parsed = []
    for number, m in enumerate(certs, start=1):
        try:
            parsed.append(x509.load_pem_x509_certificate(m.group(0)))
        except ValueError as exc:
            reason = f"certificate {number} cannot be read: {_first_line(exc)}"
            raise InvalidCertificate(path, reason) from None
    return CertificateBundle(path, key, parsed[0], tuple(parsed[1:]))


def cut_off_tail(rest: bytes) -> str | None:
    """The text after the last complete PEM block if it looks like the start of another
    (a dash: ``---``, ``-----BEG``), as the admin would see it; else None."""
    text = rest.strip()
    if not text.startswith(b"-"):
        return None
    return text[:40].decode("ascii", "replace")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# --- facts about a certificate, for logs and `elemta cert info` ---

def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The subjectAltName DNS names, lower-case, in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


def serial_hex(cert: x509.Certificate) -> str:
    """The serial number as lower-case hex, the way browsers and openssl show it."""
    return format(cert.serial_number, "x")


def common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def key_description(key: object) -> str:
    """``ECDSA P-256``, ``RSA 2048`` ... for a public or private key."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curve.get(key.curve.name, key.curve.name)}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    return type(key).__name__


def key_kind(key: object) -> str:
    """"ecdsa" or "rsa" (the words of ``[tls.letsencrypt] key_type``) for a public or private
    key; "" for another kind."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa"
    return ""


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate DER, as colon-separated upper-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def spki_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER (DANE TLSA 3 1 1), lower-case hex."""
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()

