"""``elemta dns records``: print the DNS records this configuration needs (acme/dnsrecords.py),
and with ``--check`` what DNS holds for each (acme/dnslookup.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TextIO

from elemta_smtp.acme.dnsrecords import FAILED, MISSING, PRESENT, Record, compare, needed_records, zone_text
from elemta_smtp.config import Config
from elemta_smtp.tls.report import CertInfo, certificate_report, tlsa_digests

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _notes(config: Config, tlsa: dict[str, tuple[str, ...]]) -> list[str]:
    """What the output leaves out, and why."""
    hosts = [m for m in config.mta_sts.mx if not m.startswith("*.")]
    notes = []
    if not config.mta_sts.enabled:
        notes.append("[mta_sts] is not enabled: no _mta-sts TXT record (enable it to publish a policy)")
    lacking = [h for h in hosts if h not in tlsa]
    if lacking:
        notes.append(f"no TLSA for {', '.join(lacking)}: elemta serves no certificate (other than "
                     "the self-signed bootstrap) for it here yet")
    return notes


def records_for(config: Config) -> tuple[list[Record], list[str]]:
    """The records ``config`` needs now, and notes on what is left out."""
    infos = certificate_report(config, datetime.now(timezone.utc))
    tlsa = tlsa_digests(infos)
    return needed_records(config, tlsa, next_keys(config, infos)), _notes(config, tlsa)


def next_keys(config: Config, infos: Sequence[CertInfo]) -> dict[str, tuple[str, ...]]:
    """For each MX name: the SHA-256 of each next key of a staged rollover under way."""
    from elemta_smtp.acme.danekeys import all_slot_keys  # noqa: PLC0415

    found: dict[str, tuple[str, ...]] = {}
    for keys in all_slot_keys(config, infos):
        if keys.next:
            for host in keys.hosts:
                found[host] = (*found.get(host, ()), keys.next.split()[-1])
    return found


def check(records: Sequence[Record], resolver: str | None, out: TextIO) -> int:
    """Look each record up and print it with its verdict; 1 when one is not PRESENT."""
    from elemta_smtp.acme import dnslookup  # noqa: PLC0415  (only --check needs dnspython)

    try:
        server = dnslookup.resolver(resolver)
    except ValueError as exc:
        print(f"error: {exc}", file=out)
        return EXIT_USAGE
    bad = 0
    for record in records:
        found = [dnslookup.lookup(server, record.name, t) for t in record.lookup_type]
        errors = [f.error for f in found if f.error]
        values = [v for f in found for v in f.values]
        verdict = compare(record, values) if not errors or values else FAILED
        bad += verdict != PRESENT
        shown = record.zone_lines()[0].removeprefix("; ") if record.rtype != "A/AAAA" else \
            f"{record.name}\t{record.rtype}"
        print(f"{verdict:<10} {shown}", file=out)
        if verdict == FAILED:
            print(f"{'':<10} ; lookup failed: {'; '.join(errors)}", file=out)
        elif values and (verdict != PRESENT or record.rtype == "A/AAAA"):
            print(f"{'':<10} ; DNS has: {', '.join(values)}", file=out)
    summary = "all records present" if not bad else f"{bad} record(s) {MISSING}, DIFFERENT or FAILED"
    print(f"; {summary}", file=out)
    return EXIT_FAILURE if bad else EXIT_OK


def dns_records_main(config: Config, out: TextIO, check_dns: bool = False,
                     resolver: str | None = None) -> int:
    """``elemta dns records [--check] [--resolver host:port]``."""
    records, notes = records_for(config)
    if not check_dns:
        out.write(zone_text(records, notes))
        return EXIT_OK
    return check(records, resolver, out)
