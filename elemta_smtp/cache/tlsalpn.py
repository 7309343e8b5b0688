"""TLS-ALPN-01 (RFC 8737): the validation certificate, the ALPN decision, the self-check.

The CA opens TLS to port 443 with SNI = the name being validated and ALPN offering only
``acme-tls/1``; the server must select ``acme-tls/1`` and present a self-signed
certificate whose only SAN is that name and which carries the critical
``id-pe-acmeIdentifier`` extension holding SHA-256(key authorization). No application
data follows.

Both halves use this module: the daemon's HTTPS listener (``acme/https.py``) and the
certbot plugin's own listener (used while no daemon listens on ``https_addr``) answer
through ``alpn_select``; the key authorizations come from ``<cache_dir>/tls-alpn-01/``
(``challenges.read_alpn_answer``). Plain Python and pyOpenSSL, no Twisted, no certbot.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL

#: The ALPN protocol of TLS-ALPN-01.
ACME_TLS_1 = b"acme-tls/1"
HTTP_1_1 = b"http/1.1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: How many validation certificates a listener keeps made (one per pending name; a CA
#: validates a name from several vantage points within seconds).
CACHE_SIZE = 32


def acme_identifier_value(key_authorization: bytes) -> bytes:
    """The extension's value: a DER OCTET STRING holding SHA-256(key authorization)."""
    digest = hashlib.sha256(key_authorization).digest()
    return b"\x04\x20" + digest


@dataclass(frozen=True)
class Validation:
    """A validation certificate and its key (cryptography objects)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def validation_certificate(name: str, key_authorization: bytes,
                           now: datetime | None = None) -> Validation:
    """The RFC 8737 certificate for ``name``: self-signed (P-256), the name as its only SAN,
    the critical acmeIdentifier extension for ``key_authorization``."""
    now = now or datetime.now(timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elemta TLS-ALPN-01 " + name[:40])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER,
                                                      acme_identifier_value(key_authorization)),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return Validation(cert, key)


def validates(cert: x509.Certificate, name: str, key_authorization: bytes) -> str | None:
    """Why ``cert`` is not the validation certificate for ``name`` and ``key_authorization``
    (a sentence), or None when it is: what the CA checks."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return "it has no acmeIdentifier extension (it is not a TLS-ALPN-01 certificate)"
    dns = [n.lower() for n in sans.value.get_values_for_type(x509.DNSName)]
    if dns != [name.lower()] or sans.value.get_values_for_type(x509.IPAddress):
        return f"its names are {', '.join(dns) or 'none'}, not only {name}"
    if not ext.critical:
        return "its acmeIdentifier extension is not marked critical"
    value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    if value != acme_identifier_value(key_authorization):
        return "its acmeIdentifier does not match the pending key authorization"
    return None


class ValidationCache:
    """Validation certificates already made, by (name, key authorization): making one costs
    a key generation and a signature, and the CA connects several times."""

    def __init__(self, size: int = CACHE_SIZE,
                 make: Callable[[str, bytes], Validation] = validation_certificate) -> None:
        self._size = size
        self._make = make
        self._made: OrderedDict[tuple[str, bytes], Validation] = OrderedDict()

    def get(self, name: str, key_authorization: bytes) -> Validation:
        key = (name, key_authorization)
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = self._make(name, key_authorization)
            while len(self._made) > self._size:
                self._made.popitem(last=False)
        else:
            self._made.move_to_end(key)
        return found


# --- the ALPN decision ----------------------------------------------------------------

@dataclass(frozen=True)
class AlpnChoice:
    """What to do with a ClientHello's ALPN offer. ``protocol``: the one to select (None:
    select none and go on); ``validation``: the name whose validation certificate to
    present (with ``protocol`` = acme-tls/1); ``refuse``: end the handshake with this reason."""

    protocol: bytes | None = None
    validation: str | None = None
    key_authorization: bytes = b""
    refuse: str | None = None


def choose(offered: Sequence[bytes], server_name: str | None,
           read: Callable[[str | None], bytes | None], http: bool = True) -> AlpnChoice:
    """The ALPN decision: ``acme-tls/1`` offered -> the validation certificate for the SNI
    name if a challenge is pending for it (``read(name)`` returns its key authorization),
    else refuse the handshake; otherwise ``http/1.1`` when offered and ``http``, else no
    protocol (the handshake goes on without ALPN)."""
    if ACME_TLS_1 in offered:
        if not server_name:
            return AlpnChoice(refuse="acme-tls/1 without a server name (SNI)")
        name = server_name.lower().rstrip(".")
        found = read(name)
        if not found:
            return AlpnChoice(refuse=f"acme-tls/1 for {name}, which has no pending TLS-ALPN-01 "
                                     "challenge")
        return AlpnChoice(protocol=ACME_TLS_1, validation=name, key_authorization=found)
    if http and HTTP_1_1 in offered:
        return AlpnChoice(protocol=HTTP_1_1)
    return AlpnChoice()


class Refused(SSL.Error):
    """Raised from an ALPN callback to end the handshake (OpenSSL sends a fatal
    no_application_protocol alert); pyOpenSSL re-raises it from ``do_handshake``, where
    TLS layers catch ``SSL.Error``."""


def alpn_select(connection: object, offered: list[bytes],
                read: Callable[[str | None], bytes | None], cache: ValidationCache,
                http: bool = True) -> bytes:
    """The body of a pyOpenSSL ALPN select callback: decide with ``choose``; for acme-tls/1
    put the validation certificate and key on ``connection`` itself (switching contexts
    there breaks the handshake) and select it; raise ``Refused`` to end the handshake."""
    conn: SSL.Connection = connection  # type: ignore[assignment]
    raw = conn.get_servername()
    choice = choose(offered, raw.decode("ascii", "replace") if raw else None, read, http)
    if choice.refuse is not None:
        raise Refused(choice.refuse)
    if choice.validation is not None:
        made = cache.get(choice.validation, choice.key_authorization)
        conn.use_certificate(made.certificate)  # type: ignore[arg-type, unused-ignore]
        conn.use_privatekey(made.key)  # type: ignore[arg-type, unused-ignore]
    if choice.protocol is None:
        return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]
    return choice.protocol


# --- the self-check (the plugin before answering the CA) --------------------------------

def fetch_validation(connect_host: str, port: int, name: str,
                     timeout: float = 5.0) -> x509.Certificate:
    """Connect to ``connect_host:port`` as the CA would (SNI ``name``, ALPN acme-tls/1 only)
    and return the certificate presented. Raises ``OSError`` (``ssl.SSLError`` included)
    when the listener cannot be reached, refuses, or does not select acme-tls/1."""
    import socket  # noqa: PLC0415  (self-checks only)
    import ssl  # noqa: PLC0415

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_1.decode()])
    with socket.create_connection((connect_host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        if tls.selected_alpn_protocol() != ACME_TLS_1.decode():
            raise OSError(f"the server did not select acme-tls/1 "
                          f"(it selected {tls.selected_alpn_protocol() or 'no protocol'})")
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError("the server presented no certificate")
    return x509.load_der_x509_certificate(der)
