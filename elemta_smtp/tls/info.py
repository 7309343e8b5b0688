"""``elemta cert info``: what the daemon would serve, read from files only.

No certbot, no reactor, nothing bound or written, so it answers fast. When the
daemon runs, its served serial is read over TLS and compared (probe.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.x509.oid import NameOID

from elemta_smtp.config import Config
from elemta_smtp.errors import ElemtaError
from elemta_smtp.tls.bootstrap import is_bootstrap
from elemta_smtp.tls.bundle import (
    CertificateBundle,
    common_name,
    dns_names,
    fingerprint_sha256,
    key_description,
    parse_bundle,
    serial_hex,
    spki_sha256,
)
from elemta_smtp.tls.errors import InvalidCertificate
from elemta_smtp.tls.names import Candidate, build_table
from elemta_smtp.tls.probe import ProbeResult, probe_daemon_serial
from elemta_smtp.tls.sources import (
    Source,
    bootstrap_source,
    configured_sources,
    file_warnings,
    preferred_names,
)
from elemta_smtp.units import time_left, whole_days

__all__ = ["CertInfo", "Details", "ProbeResult", "cert_info_main", "certificate_report",
           "probe_daemon_serial", "render_json", "render_text", "report_problems"]


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


def describe(bundle: CertificateBundle, now: datetime) -> Details:
    leaf = bundle.leaf
    remaining = leaf.not_valid_after_utc - now
    return Details(
        names=dns_names(leaf), issuer=common_name(leaf.issuer), ca=classify_issuer(leaf),
        serial=serial_hex(leaf), not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        days_left=whole_days(remaining), time_left=time_left(remaining),
        key=key_description(leaf.public_key()),
        sha256_fingerprint=fingerprint_sha256(leaf), tlsa=())


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
    table = build_table((Candidate(info.source, _own_name(info), dns_names(b.leaf)) for info, b in served),
                        preferred_names(config))
    if table is None:
        return [info for info, _ in inspected]
    answers: dict[Path, list[str]] = {}
    for name, source in table.exact.items():
        answers.setdefault(source, []).append(name)
    for rest, source in table.wildcard.items():
        answers.setdefault(source, []).append(f"*.{rest}")
    result = []
    for info, bundle in inspected:
        names = tuple(answers.get(info.source, ())) if info.served else ()
        details = info.details
        if details is not None and bundle is not None:
            details = replace(details, tlsa=tlsa_records(bundle.leaf, names))
        result.append(replace(info, is_default=info.source == table.default, sni_names=names,
                              details=details))
    return result


def _own_name(info: CertInfo) -> str | None:
    return info.source.name[: -len(".pem")] if info.kind == "live" else None


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
        return _own_name(info)
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
            probe = probe_daemon_serial(config, probe_name(info))
            if probe is None:
                return list(infos)  # no daemon running
            failed = probe.error is not None
        result.append(replace(info, probe=probe))
    return result


# --- renderers ---

def _when(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_text(infos: Sequence[CertInfo], problems: Sequence[str] | None = None,
                warnings: Sequence[str] = ()) -> str:
    """A human report, one block per certificate, then the warnings and the problems
    (``report_problems(infos)`` unless given)."""
    out: list[str] = []
    for info in infos:
        flags = [f for f, on in (("default", info.is_default), ("self-signed bootstrap", info.is_bootstrap),
                                 ("NOT SERVED", not info.served)) if on]
        title = ", ".join(info.details.names) if info.details and info.details.names else info.source.name
        out.append(f"{title}  [{'; '.join(flags)}]" if flags else title)
        rows: list[tuple[str, str]] = [("source", f"{info.source} ({info.kind})")]
        if info.problem:
            rows.append(("problem", info.problem))
        if d := info.details:
            rows += [
                ("issuer", f"{d.issuer} ({d.ca})"),
                ("serial", d.serial),
                ("valid", f"{_when(d.not_before)} to {_when(d.not_after)} ({d.time_left})"),
                ("key", d.key),
                ("sha256", d.sha256_fingerprint),
            ]
            rows += [("DANE TLSA", record) for record in d.tlsa]
        if info.shadowed:
            owners = sorted({str(o.source) for o in infos if o is not info and o.served
                             and o.details is not None and info.details is not None
                             and set(o.sni_names) & set(info.details.names)})
            rows.append(("note", "never presented: " + (", ".join(owners) or "another file")
                         + " answers every name it covers"))
        if p := info.probe:
            rows.append(("daemon", _probe_text(p, info, infos)))
        if info.is_bootstrap and info.served:
            rows.append(("warning", "self-signed: NOT publicly trusted; get a real certificate"))
        out += [f"  {label + ':':<11} {value}" for label, value in rows]
        out.append("")
    out += [f"WARNING: {w}" for w in warnings]
    out += [f"PROBLEM: {p}" for p in (report_problems(infos) if problems is None else problems)]
    return "\n".join(out).rstrip("\n") + "\n"


def _probe_text(p: ProbeResult, info: CertInfo, infos: Sequence[CertInfo]) -> str:
    where = f"pid {p.pid}, {p.mode} on {p.address}"
    if p.error:
        return f"{where}: {p.error}"
    if not info.served:
        owner = next((i for i in infos if i.served and i.details is not None
                      and i.details.serial == p.serial_hex), None)
        if owner is not None:
            return f"{where}: presents {owner.source} (serial {p.serial_hex}) for {p.server_name}"
        return (f"{where}: still serves serial {p.serial_hex} for {p.server_name}, loaded before "
                "this file went bad; fix the file before elemta restarts, or that name loses it")
    same = info.details is not None and p.serial_hex == info.details.serial
    rejected = [str(i.source) for i in infos if i.problem]
    if same:
        verdict = "same as this file"
    elif rejected:
        verdict = (f"DIFFERS from this file: the daemon may still serve a certificate it loaded "
                   f"earlier from {', '.join(rejected)}, which is rejected now (see PROBLEM); fix "
                   f"that file, then kill -HUP {p.pid}")
    else:
        verdict = (f"DIFFERS from this file: reload it (kill -HUP {p.pid}; restart elemta if "
                   "you changed elemta.toml) and check its log")
    return f"{where}: serves serial {p.serial_hex} ({verdict})"


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def render_json(infos: Sequence[CertInfo], problems: Sequence[str] | None = None,
                warnings: Sequence[str] = ()) -> str:
    """The same report as JSON: {"ok", "problems", "warnings", "certificates": [...]}."""
    import json  # noqa: PLC0415  (only for --json: the text report starts faster)

    problems = report_problems(infos) if problems is None else list(problems)
    certificates = []
    for info in infos:
        item = asdict(info)
        item["shadowed"] = info.shadowed
        if info.probe is not None:
            item["probe"]["serial"] = info.probe.serial_hex
        certificates.append(_jsonable(item))
    report = {"ok": not problems, "problems": problems, "warnings": list(warnings),
              "certificates": certificates}
    return json.dumps(report, indent=2) + "\n"


def cert_info_main(config: Config, as_json: bool, out: TextIO,
                   more_warnings: Sequence[str] = ()) -> int:
    """``elemta cert info``: print the report; 0 when all is well (warnings included), 1 when
    there is no usable certificate or a certificate file is rejected (expired, broken,
    wrong name). ``more_warnings`` come from other parts (the renewal check)."""
    now = datetime.now(timezone.utc)
    try:
        infos = with_probes(config, certificate_report(config, now))
        warnings = [*file_warnings(config), *more_warnings]
    except ElemtaError as exc:
        if as_json:
            import json  # noqa: PLC0415

            out.write(json.dumps({"ok": False, "problems": [str(exc)], "warnings": [],
                                  "certificates": []}, indent=2) + "\n")
        else:
            out.write(f"PROBLEM: {exc}\n")
        return 1
    problems = report_problems(infos, nothing_served(config, infos,
                                                     config.tls.letsencrypt.cache_dir.is_dir()))
    out.write(render_json(infos, problems, warnings) if as_json
              else render_text(infos, problems, warnings))
    return 1 if problems else 0
