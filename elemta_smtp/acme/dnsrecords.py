"""Which DNS records a configuration needs, written as zone-file lines, and how one compares
with what DNS holds: pure functions for ``elemta dns records`` (and the DANE work after it).

The records: MX for each policy domain (to each MX host name), an address (A/AAAA) for each
name on the certificate, ``_mta-sts.<d>`` TXT with the policy id when [mta_sts] is enabled,
``_smtp._tls.<d>`` TXT when [mta_sts] tlsrpt_rua is set, and TLSA ``3 1 1`` for port 25 of
each MX host name this daemon serves a certificate for (from that certificate's key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from elemta_smtp.acme.mtasts import policy
from elemta_smtp.config import Config

TTL = 3600
#: The record type of an address reminder: an A or an AAAA record satisfies it.
ADDRESS = "A/AAAA"

PRESENT, MISSING, DIFFERENT, FAILED = "present", "MISSING", "DIFFERENT", "FAILED"


def fqdn(name: str) -> str:
    """``name`` fully qualified, ending in a dot, lower case."""
    return name.lower().rstrip(".") + "."


@dataclass(frozen=True)
class Record:
    """One record to publish. ``value`` is the RDATA as written in a zone file, TXT without
    its quotes; for an address reminder (``ADDRESS``) it is empty: elemta cannot know the
    public address, only that one must exist."""

    name: str  # fully qualified, with the final dot
    rtype: str  # "MX" | "TXT" | "TLSA" | ADDRESS
    value: str
    why: str  # the comment heading its group

    def zone_lines(self) -> list[str]:
        """The record as zone-file lines (an address reminder as comments)."""
        if self.rtype == ADDRESS:
            return [f"; {self.name}\t{TTL}\tIN\tA\t<this host's public IPv4 address>",
                    f"; {self.name}\t{TTL}\tIN\tAAAA\t<this host's public IPv6 address>"]
        value = f'"{self.value}"' if self.rtype == "TXT" else self.value
        return [f"{self.name}\t{TTL}\tIN\t{self.rtype}\t{value}"]

    @property
    def lookup_type(self) -> tuple[str, ...]:
        """The DNS types to ask for when checking it."""
        return ("A", "AAAA") if self.rtype == ADDRESS else (self.rtype,)


WHY_MX = "MX: mail for each policy domain goes to these hosts"
WHY_ADDRESS = ("addresses: each name on the certificate must resolve to this host (A and/or "
               "AAAA; a CNAME to a name that does is fine)")
WHY_STS = "MTA-STS (RFC 8461): the id changes whenever the policy does; publish it after the policy"
WHY_TLSRPT = "TLS reporting (RFC 8460): where senders report TLS failures"
WHY_TLSA = ("DANE (RFC 7672) for port 25, from the key served now: a new key (certbot makes one "
            "at each renewal unless --reuse-key) needs a new record before it is served")


WHY_NEXT = ("DANE: the next key of a staged rollover (`elemta dane rollover start`): add it next "
            "to the current record; `elemta dane rollover finish` serves it once DNS does")


def needed_records(config: Config, tlsa: Mapping[str, str | Sequence[str]],
                   next_keys: Mapping[str, Sequence[str]] | None = None) -> list[Record]:
    """Every record ``config`` needs, in zone order. ``tlsa`` maps each MX host name this
    daemon serves a certificate for to the SHA-256 of that certificate's public key (hex;
    several: one per certificate served for it, key_type = "ecdsa+rsa"); ``next_keys`` the
    same for the next keys of staged rollovers."""
    sts = config.mta_sts
    hosts = [m for m in sts.mx if not m.startswith("*.")]
    records = [Record(fqdn(d), "MX", f"{10 * (i + 1)} {fqdn(h)}", WHY_MX)
               for d in sts.policy_domains for i, h in enumerate(hosts)]
    records += [Record(fqdn(n), ADDRESS, "", WHY_ADDRESS) for n in config.tls.letsencrypt.names]
    if sts.enabled:
        served = policy(config)
        records += [Record(fqdn(f"_mta-sts.{d}"), "TXT", f"v=STSv1; id={served.id}", WHY_STS)
                    for d in sts.policy_domains]
    if sts.tlsrpt_rua:
        records += [Record(fqdn(f"_smtp._tls.{d}"), "TXT", f"v=TLSRPTv1; rua={sts.tlsrpt_rua}",
                           WHY_TLSRPT) for d in sts.policy_domains]
    records += [Record(fqdn(f"_25._tcp.{h}"), "TLSA", f"3 1 1 {digest}", WHY_TLSA)
                for h in hosts if h in tlsa for digest in _digests(tlsa[h])]
    records += [Record(fqdn(f"_25._tcp.{h}"), "TLSA", f"3 1 1 {digest}", WHY_NEXT)
                for h in hosts for digest in (next_keys or {}).get(h, ())]
    return records


def _digests(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def zone_text(records: Sequence[Record], notes: Sequence[str] = ()) -> str:
    """The records grouped under their comments, ready to paste into zone files."""
    out: list[str] = []
    why = None
    for record in records:
        if record.why != why:
            why = record.why
            out += ["", f"; {why}"]
        out += record.zone_lines()
    out += [f"; {note}" for note in notes]
    return "\n".join(out).lstrip("\n") + "\n"


# --- comparing with what DNS holds ----------------------------------------------------

def _txt_norm(text: str) -> str:
    """A TXT tag list compared without the spaces around its separators."""
    return ";".join(part.strip() for part in text.strip().rstrip(";").split(";"))


def compare(record: Record, found: Sequence[str]) -> str:
    """PRESENT, MISSING or DIFFERENT: ``found`` are the values DNS holds for the record's
    name and type(s) (MX ``"10 mail.example.com."``, TXT text, TLSA ``"3 1 1 <hex>"``,
    addresses). MX: the host must be among the exchanges (any preference); TXT: among the
    records with the same ``v=`` tag, one must be equal; TLSA: an equal record."""
    if record.rtype == ADDRESS:
        return PRESENT if found else MISSING
    if record.rtype == "MX":
        want = record.value.split()[-1].lower()
        exchanges = [f.split()[-1].lower() for f in found if f.split()]
        return PRESENT if want in exchanges else DIFFERENT if exchanges else MISSING
    if record.rtype == "TXT":
        tag = _txt_norm(record.value).split(";")[0]
        same_kind = [_txt_norm(f) for f in found if _txt_norm(f).split(";")[0] == tag]
        if not same_kind:
            return MISSING
        return PRESENT if _txt_norm(record.value) in same_kind else DIFFERENT
    want = " ".join(record.value.lower().split())
    values = [" ".join(f.lower().split()) for f in found]
    return PRESENT if want in values else DIFFERENT if values else MISSING
