"""MTA-STS policy text, its id, and which HTTPS request gets it (acme/mtasts.py)."""

from __future__ import annotations

import pytest

from elemta_smtp.acme.mtasts import Policy, answer_request, host_name, policy, policy_id, policy_text
from elemta_smtp.config import parse_config

CONFIG = parse_config('[server]\nhostname = "mail.example.com"\n[delivery]\n'
                      'local_domains = ["example.com"]\n[mta_sts]\nenabled = true\n')
POLICY = policy(CONFIG)


def test_policy_text_is_rfc8461_with_crlf() -> None:
    """version, mode, one mx line per pattern, max_age; every line ends with CRLF."""
    assert policy_text("enforce", ["mail.example.com", "*.example.net"], 86400) == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        "max_age: 86400\r\n")


def test_policy_from_config() -> None:
    """The config's policy: testing mode, the certificate's MX name, 7 days, for example.com."""
    assert POLICY.text == "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
    assert POLICY.domains == ("example.com",)
    assert POLICY.id == policy_id(POLICY.text)


def test_policy_id_changes_exactly_when_the_text_does() -> None:
    """Same text, same id; any change (mode, mx, max_age), a new one; 1-32 letters and digits."""
    same = [policy_id(policy_text("testing", ["a.example"], 86400)) for _ in range(2)]
    assert same[0] == same[1]
    others = {policy_id(policy_text(*args)) for args in (
        ("enforce", ["a.example"], 86400), ("testing", ["b.example"], 86400),
        ("testing", ["a.example"], 86401), ("testing", ["a.example", "b.example"], 86400))}
    assert same[0] not in others and len(others) == 4
    assert all(i.isalnum() and 1 <= len(i) <= 32 for i in others)


@pytest.mark.parametrize(("raw", "name"), [
    ("mta-sts.example.com", "mta-sts.example.com"), ("MTA-STS.Example.com.:443", "mta-sts.example.com"),
    (b"mta-sts.example.com:8443", "mta-sts.example.com"), ("[::1]:443", "[::1]:443"),
])
def test_host_header_normalized(raw: str | bytes, name: str) -> None:
    """Host values compare without port, trailing dot or case."""
    assert host_name(raw) == name


def test_policy_request_gets_the_policy() -> None:
    """GET on mta-sts.<policy domain> gets 200 text/plain with the policy; HEAD the headers."""
    got = answer_request("GET", "/.well-known/mta-sts.txt", "HTTP/1.1", ["mta-sts.example.com:443"], POLICY)
    assert (got.status, got.body, got.served) == (200, POLICY.text.encode(), "mta-sts.example.com")
    assert ("Content-Type", "text/plain") in got.headers
    head = answer_request("HEAD", "/.well-known/mta-sts.txt?x=1", "HTTP/1.1", ["mta-sts.example.com"], POLICY)
    assert (head.status, head.body, head.served) == (200, b"", None)
    assert ("Content-Length", str(len(POLICY.text))) in head.headers


@pytest.mark.parametrize(("method", "target", "hosts", "served", "status"), [
    ("GET", "/.well-known/mta-sts.txt", ["mta-sts.example.org"], POLICY, 404),
    ("GET", "/.well-known/mta-sts.txt", ["example.com"], POLICY, 404),
    ("GET", "/.well-known/mta-sts.txt/", ["mta-sts.example.com"], POLICY, 404),
    ("GET", "/", ["mta-sts.example.com"], POLICY, 404),
    ("GET", "/.well-known/mta-sts.txt", ["mta-sts.example.com"], None, 404),
    ("POST", "/.well-known/mta-sts.txt", ["mta-sts.example.com"], POLICY, 405),
    ("GET", "/.well-known/mta-sts.txt", [], POLICY, 400),
    ("GET", "/.well-known/mta-sts.txt", ["mta-sts.example.com", "x"], POLICY, 400),
])
def test_everything_else(method: str, target: str, hosts: list[str], served: Policy | None,
                         status: int) -> None:
    """Other hosts, paths or no policy: 404; other methods 405; HTTP/1.1 without one Host 400."""
    got = answer_request(method, target, "HTTP/1.1", hosts, served)
    assert got.status == status and got.served is None
