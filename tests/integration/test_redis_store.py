"""The cluster's store on a real redis-server: the issuance lock's compare-and-set rules,
fencing, publishing, notice claims, challenge answers with a time to live, and what a
client sees when Redis is away or the password is wrong (never the password)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elemta_smtp.cache.redis_store import RedisStore, open_store
from elemta_smtp.cache.store import Holder, Lease, StoreUnavailable
from elemta_smtp.errors import CacheError
from tests.redis_server import RedisServer, missing_redis, running_redis
from tests.support import free_port

NAME = "mail.example.com"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    s = RedisStore(redis_server.url, f"t{request.node.name[:40]}:")
    yield s
    s.close()


def test_one_holder_at_a_time_with_growing_fencing_tokens(store: RedisStore) -> None:
    """SET NX PX: while one node holds the lock another is told who and for how long; after
    release the next grant has a larger fencing token."""
    first = store.acquire(NAME, "mx1", 30)
    assert isinstance(first, Lease) and first.fence == 1
    refused = store.acquire(NAME, "mx2", 30)
    assert isinstance(refused, Holder) and refused.owner == first.owner
    assert 29 < refused.remaining <= 30
    store.release(first)
    second = store.acquire(NAME, "mx2", 30)
    assert isinstance(second, Lease) and second.fence == 2


def test_renew_and_release_only_by_the_holder(store: RedisStore) -> None:
    """A holder whose lease expired can neither renew nor release the lock a newer holder
    took (compare-and-set scripts), and its fencing token is stale."""
    old = store.acquire(NAME, "mx1", 0.2)
    assert isinstance(old, Lease)
    assert store.renew(old, 0.2)
    time.sleep(0.5)  # the lease runs out in Redis, with no renewal
    new = store.acquire(NAME, "mx2", 30)
    assert isinstance(new, Lease) and new.fence == old.fence + 1
    assert not store.renew(old, 30)
    store.release(old)
    assert isinstance(store.acquire(NAME, "mx3", 30), Holder)
    assert store.publish_certificate(NAME, b"pem", "0a", "mx1", old.fence) is None
    assert store.fetch_certificate(NAME) is None
    assert store.publish_certificate(NAME, b"pem", "0b", "mx2", new.fence) == new.fence


def test_publish_fetch_offer_and_superseding(store: RedisStore) -> None:
    """A publication is fetched whole with its serial, fence and node and listed by the
    periodic check; an offer never overwrites one; a publication without a lease (certbot
    run by hand) takes a new fencing token, which makes the lease holder's token stale."""
    lease = store.acquire(NAME, "mx1", 30)
    assert isinstance(lease, Lease)
    assert store.publish_certificate(NAME, b"PEM\x00bytes", "0a", "mx1", lease.fence) == 1
    got = store.fetch_certificate(NAME)
    assert got is not None and (got.pem, got.serial, got.fence, got.node) == (
        b"PEM\x00bytes", "0a", 1, "mx1")
    assert store.published_serials() == {NAME: "0a"}
    assert not store.offer_certificate(NAME, b"other", "0c", "mx3")
    assert store.publish_certificate(NAME, b"by hand", "0b", "admin", None) == 2
    assert store.publish_certificate(NAME, b"late", "0d", "mx1", lease.fence) is None
    fetched = store.fetch_certificate(NAME)
    assert fetched is not None and fetched.serial == "0b"


def test_notice_claimed_once(store: RedisStore) -> None:
    """The first node to claim a notice mails it; the others learn who; a released claim
    can be taken by another node."""
    assert store.claim_notice("renewed:0b", "mx1") == "mx1"
    assert store.claim_notice("renewed:0b", "mx2") == "mx1"
    store.release_notice("renewed:0b", "mx2")  # not its claim: nothing happens
    assert store.claim_notice("renewed:0b", "mx3") == "mx1"
    store.release_notice("renewed:0b", "mx1")
    assert store.claim_notice("renewed:0b", "mx2") == "mx2"


def test_challenge_answers_expire(store: RedisStore) -> None:
    """Answers are kept by type and key for their time to live, then gone; a key that is
    not a token is refused before anything is stored."""
    store.put_challenge("http-01", "tok_1", b"tok_1.thumb", 0.2)
    store.put_challenge("tls-alpn-01", NAME, b"keyauth", 30)
    assert store.get_challenge("http-01", "tok_1") == b"tok_1.thumb"
    assert store.get_challenge("tls-alpn-01", NAME) == b"keyauth"
    time.sleep(0.4)
    assert store.get_challenge("http-01", "tok_1") is None
    store.delete_challenge("tls-alpn-01", NAME)
    assert store.get_challenge("tls-alpn-01", NAME) is None
    with pytest.raises(CacheError, match="not a valid http-01 key"):
        store.put_challenge("http-01", "../etc/passwd", b"x", 10)


def test_wrong_password_and_no_server_say_why_without_the_password(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Authentication failure and a closed port are StoreUnavailable with the reason and the
    URL with the password masked; a password file works, an unreadable one is an error."""
    wrong = RedisStore(f"redis://:not-{PASSWORD}@127.0.0.1:{redis_server.port}/0", "x:")
    with pytest.raises(StoreUnavailable) as info:
        wrong.ping()
    wrong.close()
    assert "password" in str(info.value) and f"not-{PASSWORD}" not in str(info.value)
    assert ":***@" in str(info.value)
    closed = RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", "x:")
    with pytest.raises(StoreUnavailable, match="Connection refused") as info:
        closed.ping()
    closed.close()
    assert PASSWORD not in str(info.value)
    secret = tmp_path / "redis.pass"
    secret.write_text(PASSWORD + "\n")
    from_file = open_store(f"redis://127.0.0.1:{redis_server.port}/0", "x:", secret)
    from_file.ping()
    from_file.close()
    with pytest.raises(CacheError, match="cannot read \\[cluster\\] password_file"):
        open_store(f"redis://127.0.0.1:{redis_server.port}/0", "x:", tmp_path / "missing")
