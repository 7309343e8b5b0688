"""The HTTPS listener's pieces without sockets (acme/https.py): when it is wanted, the
connection creator picking elemta's certificate per SNI (and following a reload), the
connection cap shared with the HTTP-01 site's rules, and the MTA-STS resource."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from elemta_smtp.acme import mtasts
from elemta_smtp.acme.https import HTTPSConnections, PolicyResource, https_factory, https_wanted
from elemta_smtp.certs.bundle import CertificateBundle, parse_bundle
from elemta_smtp.config import parse_config
from tests.certs import make_ca, make_leaf, memory_handshake

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
BASE = '[server]\nhostname = "mail.example.com"\n[delivery]\nlocal_domains = ["example.com"]\n'


def test_wanted_only_while_something_needs_it() -> None:
    """Off by default; on with challenge = "tls-alpn-01" or [mta_sts] enabled; off again with
    https_addr = "" or TLS off."""
    assert not https_wanted(parse_config(BASE))
    assert https_wanted(parse_config(BASE + '[tls.letsencrypt]\nchallenge = "tls-alpn-01"\n'))
    assert https_wanted(parse_config(BASE + "[mta_sts]\nenabled = true\n"))
    assert not https_wanted(parse_config(BASE + '[tls.letsencrypt]\nchallenge = "tls-alpn-01"\n'
                                                "[tls]\nenabled = false\n"))


def bundle(names: list[str]) -> CertificateBundle:
    leaf = make_leaf(make_ca(), names)
    return parse_bundle(leaf.combined_pem, Path(f"{names[0]}.pem"))


class Certificates:
    """A stand-in for ServerTLS: one bundle per name, a default, replaceable (a reload)."""

    def __init__(self) -> None:
        self.by_name = {"mta-sts.example.com": bundle(["mta-sts.example.com"])}
        self.default = bundle(["mail.example.com"])

        self.companion: CertificateBundle | None = None  # key_type = "ecdsa+rsa"

    def bundles_for(self, server_name: str | None) -> tuple[CertificateBundle, ...]:
        found = self.by_name.get(server_name or "", self.default)
        if found is self.default and self.companion is not None:
            return (found, self.companion)
        return (found,)


def client(protocols: list[bytes]) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_alpn_protos(protocols)
    return context


def test_sni_picks_the_certificate_and_a_reload_is_followed(tmp_path: Path) -> None:
    """Each SNI name gets its certificate, no name the default; after the source swaps a
    certificate (a SIGHUP reload), new handshakes get the new one."""
    certificates = Certificates()
    creator = HTTPSConnections(certificates, tmp_path)
    got = memory_handshake(creator.serverConnectionForTLS(None), "mta-sts.example.com",
                           client([b"http/1.1"]))
    assert got.cert == certificates.by_name["mta-sts.example.com"].leaf
    assert memory_handshake(creator.serverConnectionForTLS(None)).cert == certificates.default.leaf
    certificates.default = bundle(["mail.example.com"])
    assert memory_handshake(creator.serverConnectionForTLS(None), "mail.example.com",
                            client([b"http/1.1"])).cert == certificates.default.leaf


def test_ecdsa_and_rsa_clients_each_get_their_certificate(tmp_path: Path) -> None:
    """With a companion of the other key type (key_type = "ecdsa+rsa"), a client that can
    only verify RSA gets the RSA certificate and one that takes ECDSA the ECDSA one, as on
    the SMTP ports."""
    certificates = Certificates()
    ca = make_ca()
    ecdsa, rsa = make_leaf(ca, ["mail.example.com"]), make_leaf(ca, ["mail.example.com"],
                                                                 key_type="rsa")
    certificates.default = parse_bundle(ecdsa.combined_pem, Path("mail.example.com.pem"))
    certificates.companion = parse_bundle(rsa.combined_pem, Path("mail.example.com.rsa.pem"))
    creator = HTTPSConnections(certificates, tmp_path)
    rsa_only = client([b"http/1.1"])
    rsa_only.set_max_proto_version(SSL.TLS1_2_VERSION)
    rsa_only.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256")
    got = memory_handshake(creator.serverConnectionForTLS(None), "mail.example.com", rsa_only)
    assert got.cert == certificates.companion.leaf
    ecdsa_only = client([b"http/1.1"])
    ecdsa_only.set_max_proto_version(SSL.TLS1_2_VERSION)
    ecdsa_only.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256")
    got = memory_handshake(creator.serverConnectionForTLS(None), "mail.example.com", ecdsa_only)
    assert got.cert == certificates.default.leaf


def test_connection_cap_refuses_beyond_it(tmp_path: Path) -> None:
    """With the cap reached, the factory builds no protocol (the connection is closed)."""
    factory = https_factory(parse_config(BASE + "[mta_sts]\nenabled = true\n"), Certificates(),
                            tmp_path, reactor=task.Clock(), max_connections=lambda: 1)
    site = factory._wrapped  # type: ignore[attr-defined]
    assert factory.buildProtocol(ADDRESS) is not None
    site.open = 1
    assert factory.buildProtocol(ADDRESS) is None


def test_policy_resource_answers_through_the_pure_rules() -> None:
    """The resource writes what mtasts.answer_request decides: status, headers, body."""
    config = parse_config(BASE + '[mta_sts]\nenabled = true\nmode = "enforce"\n')
    served = mtasts.policy(config)
    request = DummyRequest([b""])
    request.uri = b"/.well-known/mta-sts.txt"
    request.requestHeaders.setRawHeaders(b"host", [b"mta-sts.example.com"])
    body = PolicyResource(served).render(request)  # type: ignore[arg-type]
    assert request.responseCode in (None, 200)
    assert body == served.text.encode()
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"text/plain"]
    missing = DummyRequest([b""])
    missing.uri = b"/"
    missing.requestHeaders.setRawHeaders(b"host", [b"mta-sts.example.com"])
    assert PolicyResource(served).render(missing) == b"not found\n"  # type: ignore[arg-type]
    assert missing.responseCode == 404
