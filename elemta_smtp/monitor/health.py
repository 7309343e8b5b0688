"""Is the daemon healthy? A pure decision over what the daemon serves right now.

Healthy: every listener is up, the daemon is not stopping, and (with TLS on) a valid
certificate other than the self-signed bootstrap one is served for the domain (with
key_type = "ecdsa+rsa": one of each key type served). The
bootstrap certificate always means unhealthy: mail servers that verify TLS refuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from elemta_smtp.certs.names import covers
from elemta_smtp.tls.context import ServedCertificate

#: ``source`` label values, by where ServerTLS read the certificate.
SOURCE = {"live": "live", "hand": "cert_file", "bootstrap": "bootstrap"}
DAY = 86400.0


class ListenerState(NamedTuple):
    """One listener the config asks for: its short name, address, and whether it listens."""

    name: str  # "smtp", "smtps", "http-01", "metrics"
    address: str
    up: bool


@dataclass(frozen=True)
class Health:
    """The verdict and the JSON body of ``GET /healthz``."""

    ok: bool
    reason: str
    body: dict[str, object] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


def _valid(cert: ServedCertificate, domain: str, now: datetime) -> bool:
    return (not cert.is_bootstrap and covers(cert.names, domain)
            and cert.not_before <= now < cert.not_after)


def _describe(cert: ServedCertificate, now: datetime) -> dict[str, object]:
    return {"names": list(cert.names), "source": SOURCE.get(cert.kind, cert.kind),
            "serial": cert.serial_hex, "not_after": cert.not_after.isoformat(),
            "days_left": round((cert.not_after - now).total_seconds() / DAY, 2)}


def _certificate_problem(served: Sequence[ServedCertificate], domain: str,
                         now: datetime) -> str:
    """Why no served certificate is valid for ``domain`` (there is none that is)."""
    if any(c.is_bootstrap for c in served):
        return (f"serving the self-signed bootstrap certificate: no valid certificate for "
                f"{domain} yet")
    for cert in served:
        if covers(cert.names, domain):
            if now >= cert.not_after:
                return f"the certificate for {domain} expired at {cert.not_after.isoformat()}"
            if now < cert.not_before:
                return (f"the certificate for {domain} is not valid before "
                        f"{cert.not_before.isoformat()}")
    names = sorted({n for c in served for n in c.names})
    return (f"no certificate for {domain} is served (serving {', '.join(names)})" if names
            else f"no certificate is served for {domain}")


def _kind_problem(served: Sequence[ServedCertificate], valid: Sequence[ServedCertificate],
                  domain: str, now: datetime) -> str | None:
    """With two certificates for the domain (key_type = "ecdsa+rsa"), each key type served
    must have a valid one: a client gets the one its algorithms allow, an expired one too."""
    for cert in served:
        kind = cert.key_kind
        if cert.is_bootstrap or not kind or not covers(cert.names, domain):
            continue
        if not any(c.key_kind == kind for c in valid):
            word = kind.upper()
            if now >= cert.not_after:
                return (f"the {word} certificate for {domain} expired at "
                        f"{cert.not_after.isoformat()}")
            return (f"the {word} certificate for {domain} is not valid before "
                    f"{cert.not_before.isoformat()}")
    return None


def check_health(listeners: Sequence[ListenerState], served: Sequence[ServedCertificate],
                 domain: str | None, now: datetime, stopping: bool = False) -> Health:
    """The verdict. ``domain`` is None when TLS is off (no certificate is needed)."""
    body: dict[str, object] = {
        "listeners": [{"name": item.name, "address": item.address, "up": item.up}
                      for item in listeners]}
    problem: str | None = None
    down = [f"{item.name} ({item.address})" for item in listeners if not item.up]
    if stopping:
        problem = "the daemon is stopping"
    elif not listeners:
        problem = "not listening yet"
    elif down:
        problem = f"not listening: {', '.join(down)}"
    if domain is not None:
        body["domain"] = domain
        valid = [c for c in served if _valid(c, domain, now)]
        if valid:
            body["certificate"] = _describe(max(valid, key=lambda c: c.not_after), now)
        if not valid and problem is None:
            problem = _certificate_problem(served, domain, now)
        elif problem is None:
            problem = _kind_problem(served, valid, domain, now)
    if problem is not None:
        return Health(False, problem, {"status": "unhealthy", "reason": problem, **body})
    return Health(True, "ok", {"status": "ok", **body})
