"""Which DNS records a configuration needs and how one compares with DNS (acme/dnsrecords.py)."""

from __future__ import annotations

import pytest

from elemta_smtp.acme.dnsrecords import (
    ADDRESS,
    DIFFERENT,
    MISSING,
    PRESENT,
    Record,
    compare,
    needed_records,
    zone_text,
)
from elemta_smtp.acme.mtasts import policy
from elemta_smtp.config import parse_config

BASE = ('[server]\nhostname = "mail.example.com"\n'
        '[delivery]\nlocal_domains = ["example.com", "example.org"]\n'
        '[tls.letsencrypt]\nextra_names = ["mx2.example.com"]\n')
DIGEST = "ab" * 32


def test_records_of_a_full_configuration() -> None:
    """MX per policy domain and MX host, an address per certificate name, MTA-STS and TLSRPT
    TXT per policy domain, TLSA for the MX hosts with a served key; wildcard mx patterns get
    neither MX nor TLSA."""
    config = parse_config(BASE + '[mta_sts]\nenabled = true\nmx = ["mail.example.com", "mx2.example.com", '
                                 '"*.example.net"]\ntlsrpt_rua = "mailto:r@example.com"\n')
    sts_id = policy(config).id
    records = needed_records(config, {"mail.example.com": DIGEST})
    assert [(r.name, r.rtype, r.value) for r in records] == [
        ("example.com.", "MX", "10 mail.example.com."),
        ("example.com.", "MX", "20 mx2.example.com."),
        ("example.org.", "MX", "10 mail.example.com."),
        ("example.org.", "MX", "20 mx2.example.com."),
        ("mail.example.com.", ADDRESS, ""),
        ("mx2.example.com.", ADDRESS, ""),
        ("mta-sts.example.com.", ADDRESS, ""),
        ("mta-sts.example.org.", ADDRESS, ""),
        ("_mta-sts.example.com.", "TXT", f"v=STSv1; id={sts_id}"),
        ("_mta-sts.example.org.", "TXT", f"v=STSv1; id={sts_id}"),
        ("_smtp._tls.example.com.", "TXT", "v=TLSRPTv1; rua=mailto:r@example.com"),
        ("_smtp._tls.example.org.", "TXT", "v=TLSRPTv1; rua=mailto:r@example.com"),
        ("_25._tcp.mail.example.com.", "TLSA", f"3 1 1 {DIGEST}"),
    ]


def test_without_mta_sts_no_policy_record() -> None:
    """[mta_sts] disabled: no _mta-sts TXT and no mta-sts name; no rua, no TLSRPT record."""
    records = needed_records(parse_config(BASE), {})
    assert {r.rtype for r in records} == {"MX", ADDRESS}
    assert not any("mta-sts" in r.name for r in records)


def test_zone_text_groups_under_comments() -> None:
    """Each group under its comment once; TXT quoted; address reminders as comments; notes last."""
    text = zone_text([Record("a.example.", "TXT", "v=STSv1; id=1", "why"),
                      Record("b.example.", "TXT", "v=STSv1; id=1", "why"),
                      Record("c.example.", ADDRESS, "", "addr")], ["a note"])
    assert text == ('; why\na.example.\t3600\tIN\tTXT\t"v=STSv1; id=1"\n'
                    'b.example.\t3600\tIN\tTXT\t"v=STSv1; id=1"\n\n; addr\n'
                    "; c.example.\t3600\tIN\tA\t<this host's public IPv4 address>\n"
                    "; c.example.\t3600\tIN\tAAAA\t<this host's public IPv6 address>\n; a note\n")


@pytest.mark.parametrize(("record", "found", "verdict"), [
    (Record("e.", "MX", "10 mail.example.com.", ""), ["20 MAIL.example.com."], PRESENT),
    (Record("e.", "MX", "10 mail.example.com.", ""), ["10 other.example.com."], DIFFERENT),
    (Record("e.", "MX", "10 mail.example.com.", ""), [], MISSING),
    (Record("e.", "TXT", "v=STSv1; id=1", ""), ["v=spf1 -all", "v=STSv1;id=1;"], PRESENT),
    (Record("e.", "TXT", "v=STSv1; id=1", ""), ["v=STSv1; id=2"], DIFFERENT),
    (Record("e.", "TXT", "v=STSv1; id=1", ""), ["v=spf1 -all"], MISSING),
    (Record("e.", "TLSA", f"3 1 1 {DIGEST}", ""), [f"3 1 1 {DIGEST.upper()}"], PRESENT),
    (Record("e.", "TLSA", f"3 1 1 {DIGEST}", ""), ["3 1 1 00"], DIFFERENT),
    (Record("e.", "TLSA", f"3 1 1 {DIGEST}", ""), [], MISSING),
    (Record("e.", ADDRESS, "", ""), ["2001:db8::25"], PRESENT),
    (Record("e.", ADDRESS, "", ""), [], MISSING),
])
def test_compare(record: Record, found: list[str], verdict: str) -> None:
    """MX by host, TXT among the same v= tag (spacing ignored), TLSA by value (case
    ignored), an address by existence."""
    assert compare(record, found) == verdict
