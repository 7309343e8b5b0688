"""End to end: three ``elemta serve`` nodes sharing one real redis-server, against a real
Pebble that validates HTTP-01 at a node other than the one whose certbot wrote the answer
(so only sharing through Redis makes validation pass). The scenarios of "several MX hosts,
one name": one issuance for the cluster, one renewal, a lock holder killed mid-issuance,
Redis going away and coming back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    DOMAIN,
    PREFIX,
    mails,
    node_setups,
    pebble_issued,
    send_mail,
    served_serial,
    start_nodes,
    write_configs,
)
from tests.e2e.conftest import StartPebble
from tests.e2e.test_auto_acquire import served_certificate
from tests.redis_server import RedisServer, missing_redis, running_redis
from tests.support import Setup, elemta_command, free_port, process_gone, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path / "redis") as server:
        yield server


def all_serve(cluster_setups: list[Setup], indexes: list[int], serial: int) -> bool:
    return all(served_serial(cluster_setups[i]) == serial for i in indexes)


def test_empty_caches_one_issuance_every_node_serves_it(start_pebble: StartPebble,
                                                         redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    """Empty caches: one certbot run in the whole cluster (one Pebble issuance), validated
    at another node than the issuer; all three nodes serve the same serial within seconds
    of its publication; one "issued" mail for the cluster."""
    setups = node_setups(tmp_path)
    pebble = start_pebble(http_port=setups[2].http_port)
    write_configs(setups, redis_server, pebble.directory_url)
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with start_nodes(setups, redis_server, env, first=0) as cluster:
        cluster.node(0).wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        obtained = time.monotonic()
        leaf = served_certificate(setups[0], cafile=pebble.root_path)
        wait_until(lambda: all_serve(setups, [1, 2], leaf.serial_number),
                   "every node serving the issued certificate", timeout=15)
        spread = time.monotonic() - obtained
        for i in (1, 2):
            assert served_certificate(setups[i], cafile=pebble.root_path).serial_number == leaf.serial_number
            assert "cluster: installed the certificate for mail.example.com published by node0" \
                in cluster.node(i).log()
        assert spread < 10, spread
        # the CA asked node 2, which answered with what node 0's certbot put in Redis
        assert "(from the cluster's store)" in cluster.node(2).log(), cluster.node(2).log()
        assert cluster.count("acme#info] obtaining a certificate for") == 1, cluster.logs()
        assert pebble_issued(pebble) == 1
        wait_until(lambda: sum(mails(s, f"TLS certificate for {DOMAIN} issued") for s in setups),
                   "the issued notice", timeout=30)
        assert sum(mails(s, f"TLS certificate for {DOMAIN} issued") for s in setups) == 1


def test_tls_alpn_answered_by_another_node(start_pebble: StartPebble, redis_server: RedisServer,
                                           tmp_path: Path) -> None:
    """TLS-ALPN-01 in a cluster: node 0's certbot writes the answer, Pebble validates on
    node 2's HTTPS port (its HTTP-01 port points at nothing), and node 2 answers with the
    copy it took from Redis when node 0 shared it; every node then serves the certificate."""
    setups = node_setups(tmp_path)
    https_ports = [free_port() for _ in setups]
    pebble = start_pebble(http_port=free_port(), tls_port=https_ports[2])
    write_configs(setups, redis_server, pebble.directory_url, https_ports=https_ports)
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with start_nodes(setups, redis_server, env, first=0) as cluster:
        cluster.node(0).wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        leaf = served_certificate(setups[0], cafile=pebble.root_path)
        wait_until(lambda: all_serve(setups, [1, 2], leaf.serial_number),
                   "every node serving the issued certificate", timeout=15)
        log = cluster.node(2).log()
        assert f"TLS-ALPN-01 answer for {DOMAIN} copied from Redis" in log, log
        assert f"tls-alpn-01 challenge served for {DOMAIN}" in log, log
        assert pebble_issued(pebble) == 1


LIFETIME = 45  # seconds: renewal window = a third = 15 s, so renewal is due 30 s after issuance
CHECK = 10  # check_interval, seconds (the smallest allowed)


def test_short_certificate_renewed_once_for_the_cluster(start_pebble: StartPebble,
                                                        redis_server: RedisServer,
                                                        tmp_path: Path) -> None:
    """Short Pebble certificates: when the renewal is due on every node, one node renews
    (one "renewing" line, one new Pebble certificate), all three serve the new serial, and
    one "renewed" mail goes out for the cluster."""
    setups = node_setups(tmp_path)
    pebble = start_pebble(http_port=setups[2].http_port, validity_seconds=LIFETIME)
    write_configs(setups, redis_server, pebble.directory_url,
                  renewal={"renewal_days": 30, "check_interval": f"{CHECK}s"})
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with start_nodes(setups, redis_server, env, first=0) as cluster:
        cluster.node(0).wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        first = served_certificate(setups[0], cafile=pebble.root_path)
        wait_until(lambda: all_serve(setups, [1, 2], first.serial_number),
                   "every node serving the first certificate", timeout=15)
        assert cluster.count("acme#info] renewing the certificate") == 0

        wait_until(lambda: cluster.count(f"certificate for {DOMAIN} renewed") == 1,
                   "one renewal", timeout=LIFETIME + 3 * CHECK)
        renewed_at = time.monotonic()
        renewer = next(i for i in range(3)
                       if f"certificate for {DOMAIN} renewed" in cluster.node(i).log())
        second = served_certificate(setups[renewer], cafile=pebble.root_path)
        assert second.serial_number != first.serial_number
        wait_until(lambda: all_serve(setups, [0, 1, 2], second.serial_number),
                   "every node serving the renewed certificate", timeout=10)
        subject = f"TLS certificate for {DOMAIN} renewed"
        wait_until(lambda: sum(mails(s, subject) for s in setups) >= 1, "the renewed notice",
                   timeout=30)
        # every node saw the new serial and claimed the notice: one mailed it
        for i in range(3):
            cluster.node(i).wait_for_log(format(second.serial_number, "x"), timeout=10)
        while time.monotonic() < renewed_at + CHECK:  # the next checks renew nothing more
            time.sleep(0.5)
        assert sum(mails(s, subject) for s in setups) == 1
        assert cluster.count("acme#info] renewing the certificate") == 1, cluster.logs()
        assert pebble_issued(pebble) == 2


def test_lock_holder_killed_while_certbot_runs(start_pebble: StartPebble,
                                               redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    """SIGKILL of the node holding the lock while its certbot runs: its certbot dies with it,
    another node takes the lock once the lease has run out (a higher fencing token) and
    completes; the survivors serve that one certificate, installed once each."""
    setups = node_setups(tmp_path)
    pebble = start_pebble(http_port=setups[2].http_port)
    lease = 6
    write_configs(setups, redis_server, pebble.directory_url,
                  cluster={"lock_lease": f"{lease}s", "sync_interval": "2s"})
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with start_nodes(setups, redis_server, env, first=0, lease_ms=lease * 1000) as cluster:
        victim = cluster.node(0)
        victim.wait_for_log("acme#info] obtaining a certificate for", timeout=30)
        wait_until(lambda: _children_of(victim.pid), "the certbot it runs", timeout=10)
        certbot = _children_of(victim.pid)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        killed_at = time.monotonic()
        cluster.daemons[0] = None
        assert "holds the issuance lock for mail.example.com (fencing token 1" in victim.log()
        # its certbot ends with it (PR_SET_PDEATHSIG), not orphaned
        wait_until(lambda: all(process_gone(pid) for pid in certbot), "its certbot ending",
                   timeout=15)

        wait_until(lambda: cluster.count(f"certificate for {DOMAIN} obtained") == 1,
                   "another node completing the issuance", timeout=lease + 60)
        taken_after = time.monotonic() - killed_at
        [taker] = [i for i in (1, 2) if "obtained" in cluster.node(i).log()]
        assert "holds the issuance lock for mail.example.com (fencing token 2" in \
            cluster.node(taker).log()
        leaf = served_certificate(setups[taker], cafile=pebble.root_path)
        other = 3 - taker
        wait_until(lambda: served_serial(setups[other]) == leaf.serial_number,
                   "the other survivor serving it", timeout=10)
        assert cluster.node(other).log().count("cluster: installed the certificate") == 1
        assert cluster.node(taker).log().count("cluster: installed the certificate") == 0
        assert "obtained" not in victim.log()
        assert pebble_issued(pebble) == 1  # the killed run never finished its order
        record = redis_server.client().hgetall(f"{PREFIX}cert:{DOMAIN}")
        assert record[b"fence"] == b"2" and record[b"node"] == f"node{taker}".encode()
        assert taken_after < lease + 30, taken_after


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the certbot wrapper the daemon runs)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_redis_down_nodes_keep_serving_then_catch_up(start_pebble: StartPebble,
                                                      redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    """Redis stopped: every node keeps serving its certificate and accepting mail, says so
    once, issues nothing; a node restarted meanwhile serves its local cache. Redis back
    (empty): the nodes rejoin, and a forced renewal on one node reaches all three."""
    setups = node_setups(tmp_path)
    pebble = start_pebble(http_port=setups[2].http_port)
    write_configs(setups, redis_server, pebble.directory_url,
                  cluster={"sync_interval": "1s"})
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    with start_nodes(setups, redis_server, env, first=0) as cluster:
        cluster.node(0).wait_for_log(f"certificate for {DOMAIN} obtained", timeout=90)
        first = served_certificate(setups[0], cafile=pebble.root_path).serial_number
        wait_until(lambda: all_serve(setups, [1, 2], first), "every node serving it", timeout=15)

        redis_server.stop()
        for i in range(3):
            cluster.node(i).wait_for_log("is unreachable", timeout=15)
        # node 2 restarts while Redis is down: it serves its local cache
        cluster.restart(2).wait_for_log("is unreachable", timeout=15)
        time.sleep(3)  # several sync intervals and reconnection attempts pass quietly
        for i in range(3):
            assert served_serial(setups[i]) == first
            send_mail(setups[i])
            assert cluster.node(i).log().count("is unreachable") == 1, cluster.node(i).log()
        assert cluster.count("acme#info] obtaining a certificate") == 1
        assert cluster.count("acme#info] renewing the certificate") == 0

        redis_server.start()
        for i in range(3):
            cluster.node(i).wait_for_log("is reachable again", timeout=15)
        renew = subprocess.run(
            elemta_command("cert", "renew", "-c", str(setups[0].config_path)),
            check=False, capture_output=True, text=True, timeout=120,
            env={**os.environ, **env})
        assert renew.returncode == 0, renew.stdout + renew.stderr
        second = served_certificate(setups[0], cafile=pebble.root_path).serial_number
        assert second != first
        wait_until(lambda: all_serve(setups, [1, 2], second),
                   "every node serving the forced renewal", timeout=15)
        for i in range(3):
            assert cluster.node(i).log().count("is reachable again") == 1
