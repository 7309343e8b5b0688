"""``elemta cert info`` from files: the report (elemta_smtp/tls/report.py), its renderers and
exit code (elemta_smtp/commands/cert_info.py)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from elemta_smtp.cache import layout, live
from elemta_smtp.commands.cert_info import cert_info_main, render_json, render_text
from elemta_smtp.config import Config, parse_config
from elemta_smtp.tls.bootstrap import ensure_bootstrap
from elemta_smtp.tls.report import (
    CertInfo,
    ProbeResult,
    certificate_report,
    classify_issuer,
    probe_name,
)
from tests.certs import CA, Leaf, make_ca, make_leaf

DOMAIN = "mail.example.com"


def now() -> datetime:
    return datetime.now(timezone.utc)


def config(tmp_path: Path) -> Config:
    return parse_config(f"""
[server]
hostname = "{DOMAIN}"
pid_file = "{tmp_path / 'elemta.pid'}"
[tls.letsencrypt]
cache_dir = "{tmp_path / 'cache'}"
""")


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca("R11", parent=make_ca("ISRG Root X1", organization="Internet Security Research Group"),
                   organization="Let's Encrypt")


def install(cfg: Config, leaf: Leaf, name: str = DOMAIN) -> Path:
    return live.write_certificate(cfg.tls.letsencrypt.cache_dir, name, leaf.key_pem, leaf.fullchain_pem)


def test_report_describes_served_certificate(tmp_path: Path, ca: CA) -> None:
    """The report gives names, issuer, CA kind, serial, dates, days left, key, fingerprint and TLSA."""
    cfg = config(tmp_path)
    leaf = make_leaf(ca, [DOMAIN], not_before=now() - timedelta(days=1),
                     not_after=now() + timedelta(days=30, hours=1))
    path = install(cfg, leaf)
    (info,) = certificate_report(cfg, now())
    assert (info.source, info.kind, info.served, info.is_default, info.is_bootstrap) == (
        path, "live", True, True, False)
    d = info.details
    assert d is not None
    assert d.names == (DOMAIN,)
    assert d.issuer == "R11"
    assert d.ca == "Let's Encrypt production"
    assert d.serial == format(leaf.serial, "x")
    assert (d.days_left, d.time_left) == (30, "30 days left")
    assert d.key == "ECDSA P-256"
    assert d.sha256_fingerprint.replace(":", "").lower() == hashlib.sha256(
        leaf.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    spki = leaf.cert.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert d.tlsa == (f"_25._tcp.{DOMAIN}. IN TLSA 3 1 1 {hashlib.sha256(spki).hexdigest()}",)


@pytest.mark.parametrize(("issuer_cn", "org", "expected"), [
    pytest.param("R11", "Let's Encrypt", "Let's Encrypt production", id="le-production"),
    pytest.param("E6", "Let's Encrypt", "Let's Encrypt production", id="le-production-ecdsa"),
    pytest.param("(STAGING) Ersatz Edamame E1", "(STAGING) Let's Encrypt", "Let's Encrypt staging",
                 id="le-staging"),
    pytest.param("Pebble Intermediate CA 4bc1a2", None, "test CA", id="pebble"),
    pytest.param("Sectigo RSA Domain Validation", "Sectigo Limited", "other CA", id="other"),
])
def test_ca_kind_from_issuer_name(issuer_cn: str, org: str | None, expected: str) -> None:
    """Production, staging, Pebble and other CAs are told apart by the issuer name."""
    issuer = make_ca(issuer_cn, organization=org)
    assert classify_issuer(make_leaf(issuer, [DOMAIN]).cert) == expected


def test_bootstrap_reported_when_nothing_else(tmp_path: Path) -> None:
    """With only the bootstrap on disk, it is the served default, flagged self-signed, exit code 0."""
    cfg = config(tmp_path)
    ensure_bootstrap(cfg.tls.letsencrypt.cache_dir, DOMAIN, now())
    (info,) = certificate_report(cfg, now())
    assert info.is_bootstrap and info.served and info.is_default
    assert info.details is not None and info.details.ca == "self-signed"
    out = io.StringIO()
    assert cert_info_main(cfg, False, out) == 0
    assert "NOT publicly trusted" in out.getvalue()


def test_no_certificate_is_an_error(tmp_path: Path) -> None:
    """With nothing on disk, cert info says so and exits non-zero, in text and JSON."""
    cfg = config(tmp_path)
    out = io.StringIO()
    assert cert_info_main(cfg, False, out) == 1
    assert "no usable certificate" in out.getvalue()
    out = io.StringIO()
    assert cert_info_main(cfg, True, out) == 1
    assert json.loads(out.getvalue())["ok"] is False


def test_expired_default_is_an_error(tmp_path: Path, ca: CA) -> None:
    """An expired live/<domain>.pem is shown as not served, with its dates, and the exit code is 1."""
    cfg = config(tmp_path)
    install(cfg, make_leaf(ca, [DOMAIN], not_before=now() - timedelta(days=90),
                           not_after=now() - timedelta(days=2)))
    (info,) = certificate_report(cfg, now())
    assert not info.served and info.problem is not None and "expired" in info.problem
    assert info.details is not None and info.details.days_left == -2
    assert info.details.time_left == "expired 2 days ago"
    out = io.StringIO()
    assert cert_info_main(cfg, False, out) == 1
    assert "NOT SERVED" in out.getvalue()
    assert "(expired 2 days ago)" in out.getvalue()
    assert "PROBLEM:" in out.getvalue()


def test_unparseable_file_is_listed(tmp_path: Path, ca: CA) -> None:
    """A garbage live/ file is listed with its reason next to the good one, and makes the exit code 1."""
    cfg = config(tmp_path)
    install(cfg, make_leaf(ca, [DOMAIN]))
    bad = layout.certificate_path(cfg.tls.letsencrypt.cache_dir, "bad.example.com")
    bad.write_bytes(b"garbage")
    infos = certificate_report(cfg, now())
    assert [(i.source.name, i.served, i.details is None) for i in infos] == [
        ("bad.example.com.pem", False, True), ("mail.example.com.pem", True, False)]
    assert "no PEM data" in render_text(infos)


def test_text_and_json_agree(tmp_path: Path, ca: CA) -> None:
    """Text and JSON carry the same serial, TLSA record and default flag; JSON parses."""
    cfg = config(tmp_path)
    leaf = make_leaf(ca, [DOMAIN, "*.example.com"])
    install(cfg, leaf)
    infos = certificate_report(cfg, now())
    text = render_text(infos)
    data = json.loads(render_json(infos))
    serial = format(leaf.serial, "x")
    assert f"serial:     {serial}" in text
    assert "[default]" in text
    (cert,) = data["certificates"]
    assert data["ok"] is True
    assert cert["details"]["serial"] == serial
    assert cert["is_default"] is True
    assert cert["details"]["tlsa"][0] in text
    assert len(cert["details"]["tlsa"]) == 1  # no TLSA name for the wildcard
    assert cert["details"]["not_after"].endswith("+00:00")


def hand_config(tmp_path: Path, leaf: Leaf) -> Config:
    (tmp_path / "hand.crt").write_bytes(leaf.fullchain_pem)
    (tmp_path / "hand.key").write_bytes(leaf.key_pem)
    return parse_config(f"""
[server]
hostname = "{DOMAIN}"
pid_file = "{tmp_path / 'elemta.pid'}"
[tls]
cert_file = "{tmp_path / 'hand.crt'}"
key_file = "{tmp_path / 'hand.key'}"
[tls.letsencrypt]
cache_dir = "{tmp_path / 'cache'}"
""")


def test_shadowed_certificate_is_named_and_not_probed(tmp_path: Path, ca: CA) -> None:
    """A live file whose every name a hand-managed certificate answers is flagged as never
    presented (so no probe says "DIFFERS, reload it", which would not help)."""
    cfg = hand_config(tmp_path, make_leaf(ca, [DOMAIN]))
    install(cfg, make_leaf(ca, [DOMAIN]))
    hand, live = certificate_report(cfg, now())
    assert (hand.kind, hand.sni_names, hand.shadowed) == ("hand", (DOMAIN,), False)
    assert (live.kind, live.served, live.sni_names, live.shadowed) == ("live", True, (), True)
    assert "never presented: " + str(tmp_path / "hand.crt") in render_text([hand, live])
    assert json.loads(render_json([hand, live]))["certificates"][1]["shadowed"] is True


@pytest.mark.parametrize(("sni_names", "served", "expected"), [
    pytest.param(("mail.example.org", "*.example.org"), True, "mail.example.org", id="exact-name"),
    pytest.param(("*.example.org",), True, "elemta-cert-info.example.org", id="wildcard-only"),
    pytest.param((), True, None, id="default-without-names"),
    pytest.param((), False, "mail.example.org", id="rejected-file-own-name"),
])
def test_probe_uses_a_name_that_selects_the_certificate(sni_names: tuple[str, ...], served: bool,
                                                         expected: str | None) -> None:
    """The probe's SNI name is one the daemon answers with this certificate, wildcards included;
    for a rejected live file, that file's own name."""
    info = CertInfo(Path("/c/live/mail.example.org.pem"), "live", served=served, is_default=True,
                    is_bootstrap=False, sni_names=sni_names)
    assert probe_name(info) == expected


def _probe(serial: int, name: str | None) -> ProbeResult:
    return ProbeResult(pid=4242, address="127.0.0.1:465", mode="implicit TLS", server_name=name,
                       serial=serial)


def test_probe_text_explains_a_certificate_kept_from_a_rejected_file(tmp_path: Path, ca: CA) -> None:
    """When a live file went bad the daemon keeps what it had: the report says so for that
    file, and does not tell the admin that a reload would help the default's row."""
    cfg = config(tmp_path)
    bad = layout.certificate_path(cfg.tls.letsencrypt.cache_dir, DOMAIN)
    layout.ensure_layout(cfg.tls.letsencrypt.cache_dir)
    bad.write_bytes(b"garbage")
    ensure_bootstrap(cfg.tls.letsencrypt.cache_dir, DOMAIN, now())
    rejected, boot = certificate_report(cfg, now())
    assert (rejected.served, boot.is_bootstrap) == (False, True)
    assert probe_name(rejected) == DOMAIN
    kept = 0xABC
    text = render_text([replace(rejected, probe=_probe(kept, DOMAIN)),
                        replace(boot, probe=_probe(kept, None))])
    assert f"still serves serial abc for {DOMAIN}, loaded before this file went bad" in text
    assert "which is rejected now (see PROBLEM); fix that file, then kill -HUP 4242" in text
    assert "reload it" not in text


def test_probe_text_differs_after_config_change(tmp_path: Path, ca: CA) -> None:
    """A served file the daemon does not present yet: reload, or restart after a config change."""
    cfg = config(tmp_path)
    install(cfg, make_leaf(ca, [DOMAIN]))
    (info,) = certificate_report(cfg, now())
    text = render_text([replace(info, probe=_probe(0xABC, DOMAIN))])
    assert "DIFFERS from this file: reload it (kill -HUP 4242; restart elemta if you changed" in text


def test_no_tlsa_for_names_a_certificate_is_never_presented_for(tmp_path: Path, ca: CA) -> None:
    """DANE TLSA lines are given only for names the daemon presents the certificate for: none
    for a certificate every name of which an earlier file answers, only the names it still
    answers for a partly shadowed one, none for a rejected file."""
    cfg = hand_config(tmp_path, make_leaf(ca, [DOMAIN]))
    install(cfg, make_leaf(ca, [DOMAIN]))  # shadowed by the hand-managed certificate
    install(cfg, make_leaf(ca, ["mx.example.com", DOMAIN]), "mx.example.com")  # DOMAIN shadowed
    install(cfg, make_leaf(ca, ["old.example.com"], not_before=now() - timedelta(days=90),
                           not_after=now() - timedelta(days=1)), "old.example.com")  # rejected
    hand, live, mx, old = certificate_report(cfg, now())
    assert [r.split()[0] for r in hand.details.tlsa] == [f"_25._tcp.{DOMAIN}."]  # type: ignore[union-attr]
    assert live.shadowed and live.details is not None and live.details.tlsa == ()
    assert mx.details is not None and [r.split()[0] for r in mx.details.tlsa] == ["_25._tcp.mx.example.com."]
    assert not old.served and old.details is not None and old.details.tlsa == ()
    text = render_text([hand, live, mx, old])
    assert text.count("DANE TLSA:") == 2


LE_ON = '[tls.letsencrypt]\nenabled = true\nemail = "a@example.com"\ncache_dir = "CACHE"\n'


@pytest.mark.parametrize(("toml", "cache", "expected", "unexpected"), [
    pytest.param(LE_ON, False,
                 "does not exist. `elemta serve` creates it and obtains a certificate for mail.example.com",
                 "enable [tls.letsencrypt]", id="letsencrypt-cache-missing"),
    pytest.param(LE_ON, True, "no certificate for mail.example.com in", "enable [tls.letsencrypt]",
                 id="letsencrypt-nothing-obtained-yet"),
    pytest.param('[tls.letsencrypt]\ncache_dir = "CACHE"\n', False,
                 "[tls.letsencrypt] is not enabled and [tls] cert_file/key_file are not set",
                 "does not exist", id="nothing-configured"),
])
def test_nothing_usable_says_what_is_missing(tmp_path: Path, toml: str, cache: bool, expected: str,
                                             unexpected: str) -> None:
    """With no usable certificate the first problem names what is actually missing for this
    config, never advising to enable Let's Encrypt when it is enabled."""
    cfg = parse_config(f'[server]\nhostname = "{DOMAIN}"\npid_file = "{tmp_path / "pid"}"\n'
                       + toml.replace("CACHE", str(tmp_path / "cache")))
    if cache:
        layout.ensure_layout(cfg.tls.letsencrypt.cache_dir)
    out = io.StringIO()
    assert cert_info_main(cfg, False, out) == 1
    first = next(line for line in out.getvalue().splitlines() if line.startswith("PROBLEM:"))
    assert expected in first and unexpected not in first


def test_warnings_are_printed_and_do_not_fail(tmp_path: Path, ca: CA) -> None:
    """Skipped live/ entries and a key file others can read are WARNING lines (text and JSON);
    the exit status stays 0 when the served certificate is fine."""
    cfg = config(tmp_path)
    path = install(cfg, make_leaf(ca, [DOMAIN]))
    path.chmod(0o644)
    (path.parent / "Mail.Example.com.pem").write_bytes(b"")
    out = io.StringIO()
    assert cert_info_main(cfg, False, out) == 0
    text = out.getvalue()
    assert f"WARNING: {path} holds a private key and its group and others can read it (mode 0644)" in text
    skipped = path.parent / "Mail.Example.com.pem"
    assert f'WARNING: {skipped} is skipped: "Mail.Example.com" is not written in lower case' in text
    out = io.StringIO()
    assert cert_info_main(cfg, True, out) == 0
    assert len(json.loads(out.getvalue())["warnings"]) == 2
