"""MTA-STS (RFC 8461): the policy text and its id, and which HTTPS request gets it.

Pure functions on plain values. The HTTPS listener (``https.py``) serves the policy at
``https://mta-sts.<policy domain>/.well-known/mta-sts.txt``; ``elemta dns records`` prints
the ``_mta-sts.<domain>`` TXT record whose ``id`` tells senders to fetch it again. The id
is derived from the policy text, so it changes exactly when the text does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from elemta_smtp.cache.challenges import PLAIN_UTF8, Answer, host_problem, make_answer
from elemta_smtp.config import Config

#: Where senders fetch the policy (RFC 8461 section 3.3).
POLICY_PATH = "/.well-known/mta-sts.txt"
#: The host label in front of each policy domain.
HOST_LABEL = "mta-sts."


@dataclass(frozen=True)
class Policy:
    """The policy served for every policy domain, and its id."""

    text: str
    id: str
    domains: tuple[str, ...]


def policy_text(mode: str, mx: Sequence[str], max_age: int) -> str:
    """The policy file: ``version``, ``mode``, one ``mx`` line per pattern, ``max_age``; CRLF
    line ends (RFC 8461 section 3.2)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "".join(line + "\r\n" for line in lines)


def policy_id(text: str) -> str:
    """The TXT record's ``id`` for a policy text: 32 hex digits of its SHA-256 (RFC 8461:
    1 to 32 letters and digits), so a new text gets a new id and the same text the same."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def policy(config: Config) -> Policy:
    """The policy ``config`` publishes (whether or not [mta_sts] is enabled)."""
    sts = config.mta_sts
    text = policy_text(sts.mode, sts.mx, sts.max_age)
    return Policy(text, policy_id(text), sts.policy_domains)


def policy_hosts(domains: Sequence[str]) -> tuple[str, ...]:
    """``mta-sts.<d>`` for each policy domain: the names the certificate must cover."""
    return tuple(HOST_LABEL + d for d in domains)


def host_name(host: str | bytes) -> str:
    """A ``Host`` header value as a plain lower-case name: no port, no trailing dot."""
    text = host.decode("latin-1") if isinstance(host, bytes) else host
    text = text.strip().lower()
    if text.startswith("["):  # an IPv6 literal: never a policy host
        return text
    return text.rsplit(":", 1)[0].rstrip(".") if ":" in text else text.rstrip(".")


def answer_request(method: str, target: str, version: str, hosts: Sequence[str | bytes],
                   served: Policy | None) -> Answer:
    """What the HTTPS listener answers: ``GET``/``HEAD /.well-known/mta-sts.txt`` with
    ``Host: mta-sts.<policy domain>`` gets the policy (200 text/plain) while one is
    ``served``; HTTP/1.1 without exactly one Host 400; other methods 405; everything else
    404. A query string is ignored."""
    problem = host_problem(version, hosts)
    if problem is not None:
        return make_answer(method, 400, f"bad request: {problem}\n".encode(), PLAIN_UTF8,
                           ("Connection", "close"), close=True)
    if method not in ("GET", "HEAD"):
        return make_answer(method, 405, b"method not allowed\n", PLAIN_UTF8,
                           ("Allow", "GET, HEAD"))
    path = target.split("?", 1)[0]
    host = host_name(hosts[0]) if hosts else ""
    if served is None or path != POLICY_PATH or host not in policy_hosts(served.domains):
        return make_answer(method, 404, b"not found\n", PLAIN_UTF8)
    return make_answer(method, 200, served.text.encode("utf-8"), "text/plain",
                       ("Cache-Control", "max-age=300"), served=host)
