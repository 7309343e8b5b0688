"""The store seam: what the hosts of a cluster share, as one small interface.

One host keeps everything in its cache directory (``LocalStore``: today's behaviour).
Several MX hosts answering for one name share it through Redis (``redis_store.RedisStore``)
with the same operations:

* challenge answers, by challenge type and key (HTTP-01: the token; TLS-ALPN-01: the DNS
  name being validated), with a time to live: whichever host the CA reaches answers them;
* one issuance at a time: a lock with a lease (the holder renews it while certbot runs; a
  holder that dies loses it when the lease ends) and a fencing token that grows with every
  grant, checked when the certificate is published, so a stale holder never installs;
* certificates: the combined PEM (key + leaf + chain, as ``live/<name>.pem``) with its
  serial, the fencing token it was published under and the node that published it;
* notice claims: the first host to claim a notice mails it, the others only record it.

The operations block (redis-py); the daemon calls them in worker threads
(``elemta_smtp.cluster.link``), the certbot plugin directly. Both halves use this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from elemta_smtp.cache import challenges, layout
from elemta_smtp.certs.names import is_dns_name
from elemta_smtp.errors import CacheError, ChallengeError

#: The daemon tells the certbot it runs which lease it holds: "<name> <fence> <node>".
LEASE_ENV = "ELEMTA_CLUSTER_LEASE"
#: How long a shared challenge answer lives if nobody removes it (certbot's cleanup does).
CHALLENGE_TTL = 15 * 60.0
#: How long a notice claim is kept: longer than any certificate lives.
NOTICE_TTL = 400 * 86400.0

#: Challenge types and what a valid key of each is: HTTP-01 answers are keyed by token,
#: TLS-ALPN-01 answers by the DNS name being validated (RFC 8737: one per pending name).
CHALLENGE_KEYS: Mapping[str, Callable[[str], bool]] = {
    "http-01": challenges.is_token,
    "tls-alpn-01": is_dns_name,
}


class StoreUnavailable(CacheError):
    """The shared store cannot be reached (or refused us: authentication). ``reason`` says
    why, without any password; nothing was changed."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"cannot reach Redis at {where}: {reason}")


@dataclass(frozen=True)
class Lease:
    """A granted issuance lock: ``owner`` is the value only this holder knows, ``fence`` the
    fencing token of this grant (every grant gets a larger one)."""

    name: str
    owner: str
    fence: int


@dataclass(frozen=True)
class Holder:
    """The lock is held by someone else: who, and for how many more seconds at most."""

    owner: str
    remaining: float


@dataclass(frozen=True)
class Published:
    """A certificate as published for the cluster."""

    name: str
    pem: bytes
    serial: str  # lower-case hex, as the publisher read it
    fence: int
    node: str
    at: float  # unix time


def check_challenge(kind: str, key: str) -> None:
    """Refuse a challenge type or key that is not one (``ChallengeError``, saying which)."""
    valid = CHALLENGE_KEYS.get(kind)
    if valid is None:
        raise ChallengeError(f"unknown challenge type {kind!r}: elemta shares "
                             f"{', '.join(CHALLENGE_KEYS)}")
    if not valid(key):
        raise ChallengeError(f"{key!r} is not a valid {kind} key: refusing to store it. Check "
                             "that --server points at a real ACME CA.")


def owner_node(owner: str) -> str:
    """The node part of a lock owner value ("mx1:1234 6f1c..." -> "mx1:1234")."""
    return owner.rsplit(" ", 1)[0]


def lease_env(lease: Lease, node: str) -> dict[str, str]:
    """The environment telling a certbot run which lease it works under."""
    return {LEASE_ENV: f"{lease.name} {lease.fence} {node}"}


def lease_from_env(environ: Mapping[str, str]) -> tuple[str, int, str] | None:
    """(name, fence, node) from ``LEASE_ENV``; None when unset or malformed."""
    parts = environ.get(LEASE_ENV, "").split()
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


class Store(Protocol):
    """The operations a cluster shares. Every method may raise ``StoreUnavailable``."""

    where: str  # where it is, for messages (a Redis URL without its password)

    def put_challenge(self, kind: str, key: str, value: bytes, ttl: float) -> None: ...
    def get_challenge(self, kind: str, key: str) -> bytes | None: ...
    def delete_challenge(self, kind: str, key: str) -> None: ...

    def acquire(self, name: str, node: str, lease: float) -> Lease | Holder:
        """Take the issuance lock of ``name`` for ``lease`` seconds, or say who has it."""
    def renew(self, lease: Lease, seconds: float) -> bool:
        """Extend a held lease; False when it is no longer ours (expired, taken over)."""
    def release(self, lease: Lease) -> None:
        """Give the lock back if it is still ours."""

    def publish_certificate(self, name: str, pem: bytes, serial: str, node: str,
                            fence: int | None) -> int | None:
        """Publish ``pem`` for ``name`` under ``fence`` (refused, None, when a newer grant
        exists) or, with None, under a new fencing token that supersedes any holder (a
        certbot run by hand). Returns the fencing token it was published under."""
    def offer_certificate(self, name: str, pem: bytes, serial: str, node: str) -> bool:
        """Publish ``pem`` only if nothing is published for ``name`` (a node that has a
        certificate Redis lacks: Redis lost its data), leaving the fencing token alone."""
    def fetch_certificate(self, name: str) -> Published | None: ...
    def published_serials(self) -> dict[str, str]:
        """Every published certificate name and its serial (the periodic check)."""

    def claim_notice(self, key: str, node: str) -> str:
        """Claim the mailing of notice ``key``; returns the claiming node (``node`` if ours)."""
    def release_notice(self, key: str, node: str) -> None:
        """Give up our claim (the mail failed) so another node may send it."""


class LocalStore:
    """One host: answers in the cache's folders, a lock nobody else wants, no publishing
    (the certificate is already in ``live/``), every notice ours."""

    where = "the local cache"

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._fence = 0

    def _answer_dir(self, kind: str, key: str) -> Path:
        check_challenge(kind, key)
        if kind != "http-01":
            raise ChallengeError(f"{kind} answers have no folder in the cache yet")
        return layout.challenge_dir(self.cache_dir)

    def put_challenge(self, kind: str, key: str, value: bytes, ttl: float) -> None:
        challenges.write_answer(self._answer_dir(kind, key), key, value)

    def get_challenge(self, kind: str, key: str) -> bytes | None:
        try:
            return challenges.read_answer(self._answer_dir(kind, key), key)
        except challenges.AnswerError:
            return None

    def delete_challenge(self, kind: str, key: str) -> None:
        challenges.remove_answer(self._answer_dir(kind, key) / key)

    def acquire(self, name: str, node: str, lease: float) -> Lease | Holder:
        self._fence += 1
        return Lease(name, node, self._fence)

    def renew(self, lease: Lease, seconds: float) -> bool:
        return True

    def release(self, lease: Lease) -> None:
        return None

    def publish_certificate(self, name: str, pem: bytes, serial: str, node: str,
                            fence: int | None) -> int | None:
        return fence if fence is not None else self._fence

    def offer_certificate(self, name: str, pem: bytes, serial: str, node: str) -> bool:
        return False

    def fetch_certificate(self, name: str) -> Published | None:
        return None

    def published_serials(self) -> dict[str, str]:
        return {}

    def claim_notice(self, key: str, node: str) -> str:
        return node

    def release_notice(self, key: str, node: str) -> None:
        return None
