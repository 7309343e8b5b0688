"""A bad certificate published to the cluster's Redis is never served: three real
``elemta serve`` nodes sharing a real redis-server each reject it, keep serving what they
had, and log why (once), however it is bad."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from elemta_smtp.cache.redis_store import RedisStore
from tests.certs import make_ca, make_leaf, utcnow
from tests.e2e.cluster import DOMAIN, node_setups, served_serial, write_configs
from tests.redis_server import RedisServer, missing_redis, running_redis
from tests.support import Daemon, running_daemon, wait_until


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path / "redis", password="pw-for-the-test") as server:
        yield server


def test_corrupt_published_certificates_are_never_served(redis_server: RedisServer,
                                                          tmp_path: Path) -> None:
    """A valid certificate published to Redis reaches all three nodes; then a key that does
    not match its leaf, a chain cut short, an expired one and a wrong announced serial are
    each refused by every node, which keeps serving the valid one and logs the reason once;
    the Redis password appears in no log."""
    setups = node_setups(tmp_path)
    write_configs(setups, redis_server, "https://127.0.0.1:9/dir", letsencrypt=False,
                  cluster={"sync_interval": "1s"})
    ca = make_ca()
    good = make_leaf(ca, [DOMAIN])
    other = make_leaf(ca, [DOMAIN])
    expired = make_leaf(ca, [DOMAIN], not_before=utcnow() - timedelta(days=10),
                        not_after=utcnow() - timedelta(days=1))
    bad = {
        "the key does not match": (other.key_pem + good.fullchain_pem, good.serial,
                                   "does not belong"),
        "the chain is cut short": (good.key_pem + good.cert_pem, good.serial, "chain missing"),
        "it has expired": (expired.combined_pem, expired.serial, "expired"),
        "the serial is not the announced one": (other.combined_pem, good.serial + 1,
                                                "published as serial"),
    }
    store = RedisStore(redis_server.url, "elemta:")
    with ExitStack() as stack:
        stack.callback(store.close)
        daemons: list[Daemon] = [stack.enter_context(running_daemon(s)) for s in setups]
        for daemon in daemons:
            daemon.wait_for_log("joined through Redis")
        store.publish_certificate(DOMAIN, good.combined_pem, format(good.serial, "x"),
                                  "the-test", None)
        wait_until(lambda: all(served_serial(s) == good.serial for s in setups),
                   "every node serving the valid certificate", timeout=15)

        for count, (what, (pem, serial, reason)) in enumerate(bad.items(), start=1):
            store.publish_certificate(DOMAIN, pem, format(serial, "x"), "the-test", None)
            for daemon in daemons:
                daemon.wait_for_log("is rejected, not installed", count=count, timeout=15)
                line = daemon.log().splitlines()
                rejected = [entry for entry in line if "is rejected, not installed" in entry]
                assert f"serial {serial:x}" in rejected[-1], (what, rejected[-1])
                assert f"still serving serial {good.serial:x}" in rejected[-1], what
                assert reason in rejected[-1], (what, rejected[-1])
            assert all(served_serial(s) == good.serial for s in setups), what
        time.sleep(2)  # two periodic checks (sync_interval 1s) pass: none repeats a rejection
        for daemon in daemons:
            log = daemon.log()
            assert log.count("is rejected, not installed") == len(bad), log
            assert "pw-for-the-test" not in log
