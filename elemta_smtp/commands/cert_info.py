"""``elemta cert info``: print the certificate report (tls/report.py) as text or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from elemta_smtp.cache.lineages import renewal_warnings
from elemta_smtp.config import Config
from elemta_smtp.errors import ElemtaError
from elemta_smtp.tls.report import (
    CertInfo,
    ProbeResult,
    certificate_report,
    name_report,
    nothing_served,
    report_problems,
    with_probes,
)
from elemta_smtp.tls.sources import file_warnings


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
        if info.served_with is not None:
            rows.append(("served with", f"{info.served_with}: each client gets the certificate "
                                        "its signature algorithms allow"))
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


def cert_info_main(config: Config, as_json: bool, out: TextIO) -> int:
    """``elemta cert info``: print the report; 0 when all is well (warnings included), 1 when
    there is no usable certificate or a certificate file is rejected (expired, broken,
    wrong name)."""
    now = datetime.now(timezone.utc)
    try:
        infos = with_probes(config, certificate_report(config, now))
        warnings = [*file_warnings(config), *renewal_warnings(config)]
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
    missing, extra = name_report(config, infos)
    problems += missing
    warnings += extra
    if config.tls.dane.check_dns:
        from elemta_smtp.acme import danecheck  # noqa: PLC0415  (dnspython only when checking)

        dane_problems, dane_warnings = danecheck.report(config, infos)
        problems += dane_problems
        warnings += dane_warnings
    out.write(render_json(infos, problems, warnings) if as_json
              else render_text(infos, problems, warnings))
    return 1 if problems else 0
