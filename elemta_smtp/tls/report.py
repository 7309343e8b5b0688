"""The certificate report behind ``elemta cert info``: what the daemon would serve, read
from files only, as plain values (rendering is commands/cert_info.py).

No certbot, no reactor, nothing bound or written, so it answers fast. When the
daemon runs, its served serial is read over TLS and compared (probe.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from elemta_smtp.cache.layout import live_name
from elemta_smtp.certs.bundle import (
    CertificateBundle,
    common_name,
    dns_names,
    fingerprint_sha256,
    key_description,
    parse_bundle,
    serial_hex,
    spki_sha256,
)
from elemta_smtp.certs.names import Candidate, build_table, name_matches
from elemta_smtp.config import Config
from elemta_smtp.errors import InvalidCertificate
from elemta_smtp.tls.bootstrap import is_bootstrap
from elemta_smtp.tls.probe import ProbeResult, probe_daemon_serial
from elemta_smtp.tls.sources import (
    Source,
    bootstrap_source,
    configured_sources,
    preferred_names,
)
from elemta_smtp.units import time_left, whole_days

__all__ = ["CertInfo", "Details", "ProbeResult", "certificate_report", "name_report",
           "nothing_served", "probe_daemon_serial", "report_problems", "tlsa_digests", "with_probes"]


@dataclass(frozen=True)
class Details:
    """Facts about one certificate."""

    names: tuple[str, ...]
    issuer: str
    ca: str  # "Let's Encrypt production" | "Let's Encrypt staging" | "test CA" | "self-signed" | "other CA"
    serial: str  # hex
    not_before: datetime
    not_after: datetime
    days_left: int  # whole days, toward zero: negative once expired (-1: expired 1 day ago)
    time_left: str  # "29 days left", "expired 1 day ago"
    key: str
    sha256_fingerprint: str
    tlsa: tuple[str, ...]
    spki_sha256: str = ""  # of the public key: the value of its TLSA 3 1 1 records


@dataclass(frozen=True)
class CertInfo:
    """One certificate file and whether (and how) the daemon would serve it."""

    source: Path
    kind: str  # "hand" | "live" | "bootstrap"
    served: bool
    is_default: bool
    is_bootstrap: bool
    problem: str | None = None  # why it is not served
    details: Details | None = None  # None when the file cannot be parsed at all
    probe: ProbeResult | None = field(default=None, compare=False)
    #: the SNI names that select this certificate (a served one that has none and is not
    #: the default is never presented: an earlier source answers all its names)
    sni_names: tuple[str, ...] = ()
    #: live/<name>.rsa.pem served together with live/<name>.pem (key_type = "ecdsa+rsa"):
    #: the other file; each client gets the certificate its signature algorithms allow
    served_with: Path | None = None

    @property
    def shadowed(self) -> bool:
        return self.served and not self.is_default and not self.sni_names


def classify_issuer(cert: x509.Certificate) -> str:
    """Which kind of CA issued ``cert``, from the issuer name."""
    if is_bootstrap(cert):
        return "self-signed"
    cn = common_name(cert.issuer)
    orgs = [str(a.value) for a in cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if "(STAGING)" in cn.upper():
        return "Let's Encrypt staging"
    if "Pebble" in cn or any("Pebble" in o for o in orgs):
        return "test CA"
    if any(o.startswith("Let's Encrypt") for o in orgs):
        return "Let's Encrypt production"
    if cert.issuer == cert.subject:
        return "self-signed"
    return "other CA"


def tlsa_records(cert: x509.Certificate, presented: Iterable[str] | None = None) -> tuple[str, ...]:
    """DANE-EE SPKI SHA-256 records for port 25, one per non-wildcard name of ``cert``; with
    ``presented``, only for the names the daemon presents this certificate for."""
    digest = spki_sha256(cert)
    wanted = None if presented is None else set(presented)
    return tuple(f"_25._tcp.{n}. IN TLSA 3 1 1 {digest}" for n in dns_names(cert)
                 if not n.startswith("*") and (wanted is None or n in wanted))


def tlsa_digests(infos: Sequence[CertInfo]) -> dict[str, tuple[str, ...]]:
    """For each name a real (not bootstrap) certificate is presented for: the SHA-256 of the
    public key of each certificate presented for it (two with key_type = "ecdsa+rsa"), as in
    their TLSA records (``elemta dns records``)."""
    found: dict[str, tuple[str, ...]] = {}
    for info in infos:
        if info.details is None or info.is_bootstrap:
            continue
        for record in info.details.tlsa:
            owner, *_, digest = record.split()
            name = owner.removeprefix("_25._tcp.").rstrip(".")
            if digest not in found.get(name, ()):
                found[name] = (*found.get(name, ()), digest)
    return found


def variant_of(info: CertInfo) -> str:
    """The live/ file variant of ``info`` ("rsa" for live/<name>.rsa.pem), else ""."""
    parsed = live_name(info.source.name) if info.kind == "live" else None
    return parsed[1] if parsed else ""


def key_type_of(info: CertInfo) -> str:
    """"ecdsa" or "rsa" from the key description ("ECDSA P-256", "RSA 2048"); "" unknown."""
    word = info.details.key.split()[0].lower() if info.details and info.details.key else ""
    return word if word in ("ecdsa", "rsa") else ""


def describe(bundle: CertificateBundle, now: datetime) -> Details:
    leaf = bundle.leaf
    remaining = leaf.not_valid_after_utc - now
    return Details(
        names=dns_names(leaf), issuer=common_name(leaf.issuer), ca=classify_issuer(leaf),
        serial=serial_hex(leaf), not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        days_left=whole_days(remaining), time_left=time_left(remaining),
        key=key_description(leaf.public_key()),
        sha256_fingerprint=fingerprint_sha256(leaf), tlsa=(), spki_sha256=spki_sha256(leaf))


def _inspect(source: Source, now: datetime) -> tuple[CertInfo, CertificateBundle | None]:
    """Read one source: (info, bundle if servable)."""
    base = CertInfo(source.path, source.kind, served=False, is_default=False,
                    is_bootstrap=source.kind == "bootstrap")
    try:
        data = source.read()
        parsed = parse_bundle(data, source.path)
    except InvalidCertificate as exc:
        return replace(base, problem=exc.reason), None
    details = describe(parsed, now)
    try:
        bundle = source.load(data, now)
    except InvalidCertificate as exc:
        return replace(base, problem=exc.reason, details=details), None
    return replace(base, served=True, details=details), bundle


def certificate_report(config: Config, now: datetime) -> list[CertInfo]:
    """Every certificate file the daemon looks at, in its priority order, flagged with
    whether it would be served and which one is the default. Reads files only. DANE TLSA
    records are given only for the names a certificate is presented for."""
    inspected = [_inspect(s, now) for s in configured_sources(config)]
    if not any(bundle for _, bundle in inspected):
        boot = bootstrap_source(config)
        if boot.path.exists():
            inspected.append(_inspect(boot, now))
    served = [(info, b) for info, b in inspected if b is not None]
    # live/<name>.rsa.pem is served with live/<name>.pem when both are servable (ServerTLS)
    firsts = {own_name(info): info.source for info, _ in served
              if info.kind == "live" and not variant_of(info)}
    partner = {info.source: firsts[own_name(info)] for info, _ in served
               if variant_of(info) and own_name(info) in firsts}
    table = build_table((Candidate(info.source, own_name(info), dns_names(b.leaf))
                         for info, b in served if info.source not in partner),
                        preferred_names(config))
    if table is None:
        return [info for info, _ in inspected]
    answers: dict[Path, list[str]] = {}
    for name, source in table.exact.items():
        answers.setdefault(source, []).append(name)
    for rest, source in table.wildcard.items():
        answers.setdefault(source, []).append(f"*.{rest}")
    with_first = {first: second for second, first in partner.items()}
    result = []
    for info, bundle in inspected:
        own = partner.get(info.source, info.source)
        names = tuple(answers.get(own, ())) if info.served else ()
        details = info.details
        if details is not None and bundle is not None:
            details = replace(details, tlsa=tlsa_records(bundle.leaf, names))
        result.append(replace(info, is_default=info.source == table.default, sni_names=names,
                              details=details,
                              served_with=partner.get(info.source, with_first.get(info.source))))
    return result


def own_name(info: CertInfo) -> str | None:
    """The name a live/ file stands for (live/<name>.pem, live/<name>.rsa.pem); None for
    other files."""
    if info.kind != "live":
        return None
    parsed = live_name(info.source.name)
    return parsed[0] if parsed else info.source.name[: -len(".pem")]


def nothing_served(config: Config, infos: Sequence[CertInfo], cache_exists: bool) -> str:
    """What is missing when no certificate is usable, and what to do, for this config:
    never "enable [tls.letsencrypt]" when it is enabled."""
    le = config.tls.letsencrypt
    rejected = [str(i.source) for i in infos if i.problem]
    fix = f"fix or replace {', '.join(rejected)} (see below)" if rejected else ""
    if le.enabled:
        if not cache_exists:
            return (f"no certificate yet: the cache {le.cache_dir} does not exist. `elemta serve` "
                    f"creates it and obtains a certificate for {le.domain} from {le.acme_directory} "
                    "(serving a self-signed one meanwhile); `elemta cert test` checks DNS, HTTP-01 "
                    "and the CA first")
        if not rejected:
            return (f"no certificate for {le.domain} in {le.cache_dir / 'live'} yet: `elemta serve` "
                    "obtains one (if it runs, its log says why it has not; `elemta cert test` "
                    "diagnoses DNS, HTTP-01 and the CA)")
        return (f"no usable certificate: {fix}; `elemta serve` obtains a new one for {le.domain} "
                "when none is valid")
    if rejected:
        return f"no usable certificate: {fix}"
    return ("no usable certificate: [tls.letsencrypt] is not enabled and [tls] cert_file/key_file "
            "are not set: enable one of them (`elemta serve` serves a self-signed certificate "
            "meanwhile)")


def name_report(config: Config, infos: Sequence[CertInfo]) -> tuple[list[str], list[str]]:
    """Every name of ``[tls.letsencrypt] names`` (domain, extra_names, mta-sts.<d>) checked
    against the certificates served: (problems: names no served certificate covers,
    warnings: names the domain's own live/<domain>.pem has that are no longer configured).
    Only with [tls.letsencrypt] enabled and a real certificate served (else
    ``nothing_served`` says what is missing)."""
    le = config.tls.letsencrypt
    served = [i for i in infos if i.served and i.details is not None and not i.is_bootstrap]
    if not le.enabled or not served:
        return [], []
    fix = "`elemta serve` obtains a certificate for every configured name at its next check"
    problems = [f"no certificate served covers {name} (one of [tls.letsencrypt] names: domain, "
                f"extra_names, mta-sts.<domain> for [mta_sts]); {fix}"
                for name in le.names
                if not any(name_matches(n, name) for i in served for n in i.details.names)]  # type: ignore[union-attr]
    own = next((i for i in served if i.kind == "live" and own_name(i) == le.domain), None)
    warnings = []
    if own is not None and own.details is not None:
        extra = [n for n in own.details.names if n not in le.names]
        if extra:
            warnings.append(f"{own.source} covers {', '.join(extra)}, no longer in elemta.toml; "
                            f"{fix}")
    return problems, warnings


def report_problems(infos: Sequence[CertInfo], nothing: str | None = None) -> list[str]:
    """Sentences for what needs the admin: nothing to serve (``nothing`` says what is
    missing, see ``nothing_served``), rejected files."""
    problems = [f"{i.source} is not served: {i.problem}" for i in infos if i.problem]
    if not any(i.served for i in infos):
        problems.insert(0, nothing or "no usable certificate: enable [tls.letsencrypt], or set "
                                      "[tls] cert_file and key_file")
    return problems


def probe_name(info: CertInfo) -> str | None:
    """The SNI name that makes the daemon present ``info`` (None: send no SNI, for the default).
    For a rejected live/<name>.pem: its <name>, to see what the daemon kept serving for it."""
    if not info.served:
        return own_name(info)
    exact = [n for n in info.sni_names if not n.startswith("*.")]
    if exact:
        return exact[0]
    if info.sni_names:
        return "elemta-cert-info" + info.sni_names[0][1:]  # any one label under the wildcard
    return None


def with_probes(config: Config, infos: Sequence[CertInfo]) -> list[CertInfo]:
    """Attach what the running daemon serves for each served certificate's name (SNI), and
    for each rejected live/<name>.pem. A certificate that no name reaches (``shadowed``) is
    not probed."""
    result: list[CertInfo] = []
    failed = False
    for info in infos:
        probe = None
        wanted = (info.served and info.details is not None and not info.shadowed) or (
            not info.served and info.kind == "live")
        if wanted and not failed:
            # of a pair served together, each is seen only by a client that takes its key type
            key_type = key_type_of(info) if info.served_with is not None else ""
            probe = probe_daemon_serial(config, probe_name(info), key_type=key_type)
            if probe is None:
                return list(infos)  # no daemon running
            failed = probe.error is not None
        result.append(replace(info, probe=probe))
    return result
