"""Shared pieces of the certbot plugin's tests: a test root (elemta.toml, cache, certbot's
folders) with the plugin as certbot builds it, certbot-style lineages, certbot's display."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from acme import challenges, messages
from certbot import achallenges
from certbot._internal import cli
from certbot._internal.display import obj as display_obj
from certbot._internal.plugins import disco
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy import jwk

from certbot_elemta._internal.configurator import ElemtaConfigurator

ACCOUNT_KEY = jwk.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def achall(token: bytes = b"0123456789abcdef0123", domain: str = "mail.example.com",
           ) -> achallenges.KeyAuthorizationAnnotatedChallenge:
    """A real annotated HTTP-01 challenge as certbot hands it to an authenticator."""
    challb = messages.ChallengeBody(chall=challenges.HTTP01(token=token),
                                    uri="https://ca.test/chall/1", status=messages.STATUS_PENDING)
    return achallenges.KeyAuthorizationAnnotatedChallenge(
        challb=challb, identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=domain),
        account_key=ACCOUNT_KEY)


def alpn_achall(domain: str = "mail.example.com") -> achallenges.KeyAuthorizationAnnotatedChallenge:
    """A real annotated TLS-ALPN-01 challenge, parsed from the CA's JSON like certbot does."""
    chall = challenges.Challenge.from_json({"type": "tls-alpn-01",
                                            "token": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"})
    challb = messages.ChallengeBody(chall=chall, uri="https://ca.test/chall/2",
                                    status=messages.STATUS_PENDING)
    return achallenges.KeyAuthorizationAnnotatedChallenge(
        challb=challb, identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=domain),
        account_key=ACCOUNT_KEY)


CONFIG = """\
# elemta.toml written by hand — comments and layout must survive the installer
[server]
hostname = "mx.example.com"   # the name in the greeting
pid_file = "{root}/elemta.pid"
listen_addr = "127.0.0.1:2525"

[tls]
enabled = false  # turned on once a certificate exists
listen_addr = "127.0.0.1:4465"

[tls.letsencrypt]
domain = ""
cache_dir = "{root}/cache"
http_addr = "127.0.0.1:{http_port}"
"""


# --- helpers ---------------------------------------------------------------------

def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_lineage(live_dir: Path, names: list[str], lineage_name: str | None = None) -> Path:
    """A certbot-style lineage (cert, chain, fullchain, privkey) signed by a throwaway CA."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder = live_dir / (lineage_name or names[0])
    folder.mkdir(parents=True)
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
    chain_pem = ca.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "chain.pem").write_bytes(chain_pem)
    (folder / "fullchain.pem").write_bytes(cert_pem + chain_pem)
    (folder / "privkey.pem").write_bytes(_pem_key(key))
    return folder


class Root:
    """Paths of one test: elemta.toml, the cache, certbot's dirs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config_file = path / "elemta.toml"
        self.cache_dir = path / "cache"
        self.pid_file = path / "elemta.pid"
        self.certbot = path / "certbot"

    def write(self, text: str | None = None, http_port: int = 9) -> bytes:
        data = (text or CONFIG.format(root=self.path, http_port=http_port)).encode()
        self.config_file.write_bytes(data)
        return data

    def plugin(self, *args: str) -> ElemtaConfigurator:
        """The plugin as certbot builds it for ``certbot <args> --elemta-config <file>``."""
        argv = [*(args or ("certonly",)), "--config-dir", str(self.certbot / "config"),
                "--work-dir", str(self.certbot / "work"), "--logs-dir", str(self.certbot / "logs"),
                "--elemta-config", str(self.config_file)]
        config = cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), argv)
        return ElemtaConfigurator(config, "elemta")

    @property
    def live_dir(self) -> Path:
        return self.certbot / "config" / "live"


@pytest.fixture
def root(tmp_path: Path) -> Root:
    r = Root(tmp_path)
    r.write()
    return r


@pytest.fixture
def display() -> Iterator[io.StringIO]:
    """certbot's display, as certbot sets it for --non-interactive; the text is returned."""
    out = io.StringIO()
    previous = display_obj._SERVICE.display
    display_obj.set_display(display_obj.NoninteractiveDisplay(out))
    yield out
    display_obj._SERVICE.display = previous


def deploy(plugin: ElemtaConfigurator, lineage: Path, domain: str) -> None:
    plugin.deploy_cert(domain, str(lineage / "cert.pem"), str(lineage / "privkey.pem"),
                       str(lineage / "chain.pem"), str(lineage / "fullchain.pem"))


def install(plugin: ElemtaConfigurator, lineage: Path) -> None:
    """``certbot install``'s calls: deploy_cert, save, restart."""
    deploy(plugin, lineage, "mail.example.com")
    plugin.save("Deployed ACME Certificate")
    plugin.restart()


