"""`elemta dns records` and `--check`, the real command in a child process, against a DNS
server on 127.0.0.1 holding a mix of right, wrong and missing records."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from elemta_smtp.acme.mtasts import policy
from elemta_smtp.cache import live
from elemta_smtp.certs.bundle import spki_sha256
from elemta_smtp.config import load_config
from tests.certs import make_ca, make_leaf
from tests.dnsserver import running_dns
from tests.support import Setup, elemta_command

NAMES = ["mail.example.com", "mx2.example.com", "mta-sts.example.com"]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """MTA-STS enabled for example.com with TLS reporting, an extra MX name, and a live
    certificate covering every name (its key gives the TLSA records)."""
    s = Setup(tmp_path)
    s.write({"tls.letsencrypt": {"enabled": True, "email": "a@example.com",
                                 "extra_names": ["mx2.example.com"]},
             "mta_sts": {"enabled": True, "mode": "enforce",
                         "tlsrpt_rua": "mailto:tlsrpt@example.com"}})
    leaf = make_leaf(make_ca(), NAMES)
    live.write_certificate(s.cache_dir, "mail.example.com", leaf.key_pem, leaf.fullchain_pem)
    return s


def dns_records(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command("dns", "records", "-c", str(setup.config_path), *args),
                          capture_output=True, text=True, timeout=120, check=False)


def digest(setup: Setup) -> str:
    pem = (setup.cache_dir / "live" / "mail.example.com.pem").read_bytes()
    from cryptography import x509

    return spki_sha256(x509.load_pem_x509_certificate(pem))


def test_prints_every_record_ready_to_paste(setup: Setup) -> None:
    """MX to each MX host, address reminders for every name, the MTA-STS TXT with the served
    policy's id, the TLSRPT TXT, TLSA 3 1 1 from the served key; all names end in a dot."""
    result = dns_records(setup)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    sts_id = policy(load_config(setup.config_path)).id
    for line in ("example.com.\t3600\tIN\tMX\t10 mail.example.com.",
                 "example.com.\t3600\tIN\tMX\t20 mx2.example.com.",
                 "; mta-sts.example.com.\t3600\tIN\tA\t<this host's public IPv4 address>",
                 f'_mta-sts.example.com.\t3600\tIN\tTXT\t"v=STSv1; id={sts_id}"',
                 '_smtp._tls.example.com.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:tlsrpt@example.com"',
                 f"_25._tcp.mail.example.com.\t3600\tIN\tTLSA\t3 1 1 {digest(setup)}",
                 f"_25._tcp.mx2.example.com.\t3600\tIN\tTLSA\t3 1 1 {digest(setup)}"):
        assert line in text.splitlines(), f"{line!r} not in:\n{text}"
    for line in text.splitlines():
        if line and not line.startswith(";"):
            assert line.split("\t")[0].endswith("."), line


def test_check_marks_present_missing_and_different(setup: Setup) -> None:
    """Against a DNS server with some records right (one MX, an address through a CNAME,
    the TLSRPT record, one TLSA), some wrong (an old MTA-STS id, the other TLSA) and some
    missing (the second MX, mx2's address): each is marked, exit 1."""
    sts_id = policy(load_config(setup.config_path)).id
    zone = f"""
example.com. 60 IN MX 10 mail.example.com.
mail.example.com. 60 IN A 192.0.2.25
mta-sts.example.com. 60 IN CNAME mail.example.com.
_mta-sts.example.com. 60 IN TXT "v=STSv1; id=20240101"
_smtp._tls.example.com. 60 IN TXT "v=TLSRPTv1;rua=mailto:tlsrpt@example.com"
_25._tcp.mail.example.com. 60 IN TLSA 3 1 1 {digest(setup)}
_25._tcp.mx2.example.com. 60 IN TLSA 3 1 1 {'00' * 32}
"""
    with running_dns(zone) as port:
        result = dns_records(setup, "--check", "--resolver", f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()

    def verdict(start: str) -> str:
        [line] = [line for line in lines if start in line and not line.lstrip().startswith(";")]
        return line.split()[0]

    assert verdict("10 mail.example.com.") == "present"
    assert verdict("20 mx2.example.com.") == "DIFFERENT"  # example.com has MX, not to mx2
    assert verdict("mail.example.com.\tA/AAAA") == "present"
    assert verdict("mta-sts.example.com.\tA/AAAA") == "present"  # via the CNAME
    assert verdict("mx2.example.com.\tA/AAAA") == "MISSING"
    assert verdict(f"id={sts_id}") == "DIFFERENT"
    assert "; DNS has: v=STSv1; id=20240101" in result.stdout
    assert verdict("v=TLSRPTv1") == "present"  # spacing after ";" does not matter
    assert verdict("_25._tcp.mail.example.com.") == "present"
    assert verdict("_25._tcp.mx2.example.com.") == "DIFFERENT"
    assert lines[-1] == "; 4 record(s) MISSING, DIFFERENT or FAILED"


def test_check_all_present_exits_0(setup: Setup) -> None:
    """A zone holding exactly what the command prints: all present, exit 0."""
    printed = dns_records(setup).stdout
    addresses = "\n".join(f"{n}. 60 IN A 192.0.2.25" for n in NAMES)
    zone = "\n".join(line.replace("\t3600\t", " 60 ") for line in printed.splitlines()
                     if line and not line.startswith(";")) + "\n" + addresses + "\n"
    with running_dns(zone) as port:
        result = dns_records(setup, "--check", "--resolver", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "; all records present"


@pytest.mark.parametrize("value", [":53", "127.0.0.1", "localhost:53"])
def test_bad_resolver_is_a_usage_error(setup: Setup, value: str) -> None:
    """A --resolver that is not "IP:port" is a usage error before anything is printed: exit 2,
    on stderr, saying what to write (as `config check` says it of [tls.dane] resolver)."""
    result = dns_records(setup, "--check", "--resolver", value)
    assert result.returncode == 2 and result.stdout == ""
    assert "usage: elemta dns records" in result.stderr
    assert (f'argument --resolver: "{value}" is not a DNS server address: write the DNS '
            'server\'s IP address and port, such as "127.0.0.1:53"') in result.stderr


def test_a_silent_resolver_is_waited_for_once(setup: Setup) -> None:
    """--resolver pointing at a port where nothing answers: the first look-up waits its 3 s,
    every other record is marked with the same reason without being asked again (each record
    waited its own 3 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))  # bound, never read: queries go unanswered
        result = dns_records(setup, "--check", "--resolver", f"127.0.0.1:{hole.getsockname()[1]}")
    assert result.returncode == 1
    assert result.stdout.count("no answer within 3s") == 1 + result.stdout.count(
        "no answer within 3s (not asked again)"), result.stdout
    assert result.stdout.count("(not asked again)") >= 2
