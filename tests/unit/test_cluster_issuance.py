"""The cluster's issuance lock as the certificate manager uses it, on an in-memory store
and a task.Clock: grant with a fencing token, lease renewal while held, refusal with a
time to look again, a lost lease, Redis unreachable; and the line to Redis saying once
when it goes away and once when it is back."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogEvent, capturedLogs, formatEvent

from elemta_smtp.cache.store import LEASE_ENV, Holder, lease_from_env
from elemta_smtp.cluster.issuance import ClusterIssuance, Permit, renew_every, retry_after
from elemta_smtp.cluster.link import Link
from tests.cluster_fakes import InlinePool, InlineReactor, MemoryStore

NAME = "mail.example.com"
LEASE = 30.0


def text(logs: Sequence[LogEvent]) -> str:
    return "\n".join(formatEvent(e) for e in logs)


class Node:
    def __init__(self, store: MemoryStore, name: str) -> None:
        self.link = Link(store.where, name, InlineReactor(), InlinePool())
        self.caught_up: list[str] = []
        self.issuance = ClusterIssuance(self.link, store, name, lease=LEASE, clock=store.clock,
                                        catch_up=self.catch_up)

    def catch_up(self, name: str) -> Deferred[None]:
        self.caught_up.append(name)
        return succeed(None)

    def begin(self) -> Permit:
        results: list[Permit] = []
        self.issuance.begin(NAME).addCallback(results.append)
        assert results, "begin did not finish at once on an in-memory store"
        return results[0]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(task.Clock())


def test_grant_gives_a_fencing_token_and_catches_up_first(store: MemoryStore) -> None:
    """The first node gets the lock with fencing token 1, catches up with what is published
    before it runs certbot, and tells certbot its lease through the environment."""
    node = Node(store, "mx1")
    permit = node.begin()
    assert permit.granted and permit.lease is not None and permit.lease.fence == 1
    assert node.caught_up == [NAME]
    assert lease_from_env(node.issuance.certbot_env()) == (NAME, 1, "mx1")


def test_lease_is_renewed_while_held_and_released_at_the_end(store: MemoryStore) -> None:
    """While certbot runs the holder renews every third of the lease, so the lock outlives a
    run longer than the lease; after ``end`` it is free and renewals stop."""
    node = Node(store, "mx1")
    permit = node.begin()
    for _ in range(6):
        store.clock.advance(renew_every(LEASE))
    assert store.renewals == 6
    assert isinstance(store.acquire(NAME, "mx2", LEASE), Holder)  # 2 leases later: still held
    node.issuance.end(permit)
    assert NAME not in store.locks and node.issuance.certbot_env() == {}
    store.clock.advance(LEASE)
    assert store.renewals == 6


def test_a_held_lock_is_refused_with_a_time_to_look_again(store: MemoryStore) -> None:
    """A second node is refused while the first holds the lock, told to look again right
    after the holder's lease would end, and says who holds it once, not at every look."""
    first, second = Node(store, "mx1"), Node(store, "mx2")
    first.begin()
    store.clock.advance(5)  # before its first renewal
    with capturedLogs() as logs:
        refused = second.begin()
        again = second.begin()
    assert not refused.granted and not again.granted
    assert refused.retry_after == pytest.approx(LEASE - 5 + 1)
    assert "node mx1 holds the issuance lock" in refused.reason
    assert text(logs).count("node mx1 is obtaining or renewing") == 1
    assert second.caught_up == []


def test_a_dead_holder_loses_the_lock_when_its_lease_ends(store: MemoryStore) -> None:
    """A holder that stops renewing (killed) loses the lock one lease later; the next node
    gets it with a larger fencing token, so the dead one's certbot could not publish."""
    dead = Node(store, "mx1").begin().lease
    assert dead is not None
    store.locks[NAME] = (dead.owner, store.clock.seconds() + LEASE)  # no renewals from now
    store.clock.advance(LEASE + 1)
    permit = Node(store, "mx2").begin()
    assert permit.granted and permit.lease is not None and permit.lease.fence == 2
    assert store.publish_certificate(NAME, b"pem", "0a", "mx1", dead.fence) is None


def test_a_lost_lease_is_said_and_certbot_is_told_nothing(store: MemoryStore) -> None:
    """When a renewal finds the lock gone (Redis unreachable longer than the lease, another
    node took it), the holder says so once and no longer hands certbot that lease."""
    node = Node(store, "mx1")
    node.begin()
    store.locks[NAME] = ("mx2 0009", store.clock.seconds() + LEASE)
    with capturedLogs() as logs:
        store.clock.advance(renew_every(LEASE))
        store.clock.advance(renew_every(LEASE))
    assert text(logs).count("was lost") == 1
    assert node.issuance.certbot_env() == {}
    assert store.renewals == 1  # renewals stop once it is lost


def test_redis_unreachable_refuses_and_says_so_once(store: MemoryStore) -> None:
    """With Redis down nothing is issued: the permit is refused (look again at the next
    check, or when Redis is back) and the log says it once for all the attempts."""
    node = Node(store, "mx1")
    store.down = True
    with capturedLogs() as logs:
        permits = [node.begin() for _ in range(5)]
    assert not any(p.granted for p in permits)
    assert all(p.retry_after is None and "Redis is unreachable" in p.reason for p in permits)
    assert text(logs).count("is unreachable") == 1


def test_link_says_when_redis_is_back_and_runs_the_catch_up_hooks(store: MemoryStore) -> None:
    """One line when Redis goes away, one when it answers again, and the catch-up hooks run
    then (not at the first contact)."""
    link = Link(store.where, "mx1", InlineReactor(), InlinePool())
    back: list[str] = []
    link.on_back.append(lambda: back.append("caught up"))
    with capturedLogs() as logs:
        link.call(store.published_serials)
        store.down = True
        for _ in range(3):
            link.call(store.published_serials).addErrback(lambda _: None)
        store.down = False
        link.call(store.published_serials)
        link.call(store.published_serials)
    said = text(logs)
    assert said.count("joined through Redis") == 1
    assert said.count("is unreachable") == 1
    assert said.count("is reachable again") == 1
    assert back == ["caught up"]


def test_retry_after_is_capped_at_one_lease() -> None:
    """A holder claiming a longer lock than our lease is looked at again after one lease."""
    assert retry_after(Holder("x", 500.0), 60.0) == 61.0
    assert retry_after(Holder("x", 2.0), 60.0) == 3.0
    assert retry_after(Holder("x", -1.0), 60.0) == 1.0


def test_lease_env_round_trip() -> None:
    """What the daemon puts in certbot's environment is what the plugin reads back; anything
    else is no lease."""
    assert lease_from_env({LEASE_ENV: "mail.example.com 7 mx1:42"}) == ("mail.example.com", 7,
                                                                        "mx1:42")
    assert lease_from_env({LEASE_ENV: "mail.example.com x mx1"}) is None
    assert lease_from_env({}) is None
