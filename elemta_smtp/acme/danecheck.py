"""The TLSA lookups of the DANE checks (blocking, dnspython through ``dnslookup``): for the
daemon's ``check_dns`` (in a thread), ``elemta cert info`` and ``elemta dane ...``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from elemta_smtp.acme import dnslookup
from elemta_smtp.acme.dane import check_names, mismatch_sentence, mx_hosts, owner, record_line
from elemta_smtp.cache.live import read_bundle
from elemta_smtp.certs.bundle import spki_sha256
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError
from elemta_smtp.tls.report import CertInfo


def lookup_tlsa(resolver: str | None, names: Iterable[str]
                ) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """For each name: the TLSA values ("3 1 1 <hex>") at ``_25._tcp.<name>`` and the lookup
    error (None when DNS answered, records or not). ``resolver``: "host:port" or None for the
    system's; a bad one raises ``ValueError``."""
    server = dnslookup.resolver(resolver)
    found: dict[str, tuple[tuple[str, ...], str | None]] = {}
    for name in names:
        answer = dnslookup.lookup(server, owner(name), "TLSA")
        found[name] = (tuple(" ".join(v.lower().split()) for v in answer.values), answer.error)
    return found


def report(config: Config, infos: Sequence[CertInfo]) -> tuple[list[str], list[str]]:
    """For ``elemta cert info`` with ``[tls.dane] check_dns``: (problems: a served key no
    published TLSA record matches, warnings: MX names without TLSA records or whose lookup
    failed), for every real certificate served from live/."""
    problems: list[str] = []
    warnings: list[str] = []
    try:
        server_name = config.tls.dane.resolver or None
        for info in infos:
            if not info.served or info.is_bootstrap or info.kind != "live" or not info.sni_names:
                continue
            bundle = read_bundle(info.source)
            hosts = mx_hosts(config, info.sni_names)
            checks = check_names(lookup_tlsa(server_name, hosts), bundle.leaf, bundle.chain)
            served = f"3 1 1 {spki_sha256(bundle.leaf)}"
            if any(c.mismatch for c in checks):
                problems.append(f"DANE ({info.source}): {mismatch_sentence(checks, served)}")
            for c in checks:
                if c.error is not None:
                    warnings.append(f"DANE: cannot look up {owner(c.name)} TLSA: {c.error}")
                elif not c.found:
                    warnings.append(f"DANE: {owner(c.name)} has no TLSA record (publish "
                                    f"{record_line(c.name, served)}; `elemta dns records`)")
    except (ValueError, CacheError) as exc:
        warnings.append(f"DANE: cannot check the TLSA records: {exc}")
    return problems, warnings
