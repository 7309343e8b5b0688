"""Certificates published by another node, installed here through the cache's validated
write: what is installed, kept, refused and said, on an in-memory store and real files."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.logger import LogEvent, capturedLogs, formatEvent

from elemta_smtp.cache import layout
from elemta_smtp.cluster.link import Link
from elemta_smtp.cluster.sync import CertificateSync, install
from tests.certs import CA, Leaf, make_ca, make_leaf, utcnow
from tests.cluster_fakes import InlinePool, InlineReactor, MemoryStore

NAME = "mail.example.com"


def text(logs: Sequence[LogEvent]) -> str:
    return "\n".join(formatEvent(e) for e in logs)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(task.Clock())


@pytest.fixture
def ca() -> CA:
    return make_ca()


def publish(store: MemoryStore, leaf: Leaf, node: str = "mx2", serial: int | None = None) -> None:
    store.publish_certificate(NAME, leaf.combined_pem, format(serial or leaf.serial, "x"), node,
                              None)


def live_file(cache_dir: Path) -> Path:
    return layout.certificate_path(cache_dir, NAME)


def test_a_valid_newer_certificate_is_installed_0600(store: MemoryStore, ca: CA,
                                                     tmp_path: Path) -> None:
    """What another node published is written to live/<name>.pem (0600) byte for byte; the
    same publication again changes nothing."""
    leaf = make_leaf(ca, [NAME])
    publish(store, leaf)
    outcome = install(store, tmp_path, NAME, utcnow(), "mx1")
    assert outcome.what == "installed"
    assert live_file(tmp_path).read_bytes() == leaf.combined_pem
    assert stat.S_IMODE(live_file(tmp_path).stat().st_mode) == 0o600
    assert install(store, tmp_path, NAME, utcnow(), "mx1").what == "current"


@pytest.mark.parametrize(("case", "reason"), [
    ("expired", "expired"),
    ("wrong serial", "published as serial"),
    ("other name", "not mail.example.com"),
    ("key of another", "does not belong"),
    ("our serial, another key", "does not belong"),
    ("garbage", "no PEM data"),
])
def test_a_bad_certificate_is_refused_and_ours_kept(store: MemoryStore, ca: CA, tmp_path: Path,
                                                    case: str, reason: str) -> None:
    """Every way a published certificate can be unfit is refused with its reason, and the
    certificate in live/ stays as it was."""
    ours = make_leaf(ca, [NAME])
    publish(store, ours)
    install(store, tmp_path, NAME, utcnow(), "mx1")
    bad = make_leaf(ca, [NAME], not_before=utcnow() - timedelta(days=9),
                    not_after=utcnow() - timedelta(days=1)) if case == "expired" else \
        make_leaf(ca, ["other.example.com"] if case == "other name" else [NAME])
    pem = {"key of another": ours.key_pem + bad.fullchain_pem,
           "our serial, another key": bad.key_pem + ours.fullchain_pem,
           "garbage": b"not a certificate"}.get(case, bad.combined_pem)
    serial = ours.serial if case.startswith("our serial") else bad.serial
    store.publish_certificate(NAME, pem, format(serial + (case == "wrong serial"), "x"),
                              "mx2", None)
    outcome = install(store, tmp_path, NAME, utcnow(), "mx1")
    assert outcome.what == "rejected" and reason in outcome.reason, outcome
    assert outcome.local_serial == format(ours.serial, "x")
    assert live_file(tmp_path).read_bytes() == ours.combined_pem


def test_an_older_certificate_is_not_installed_over_ours(store: MemoryStore, ca: CA,
                                                         tmp_path: Path) -> None:
    """A valid certificate that expires no later than ours is kept out (no downgrade)."""
    ours = make_leaf(ca, [NAME], not_after=utcnow() + timedelta(days=60))
    live_file(tmp_path).parent.mkdir(parents=True)
    live_file(tmp_path).write_bytes(ours.combined_pem)
    publish(store, make_leaf(ca, [NAME], not_after=utcnow() + timedelta(days=30)))
    assert install(store, tmp_path, NAME, utcnow(), "mx1").what == "older"
    assert live_file(tmp_path).read_bytes() == ours.combined_pem


def test_what_this_node_published_is_left_to_its_own_certbot(store: MemoryStore, ca: CA,
                                                             tmp_path: Path) -> None:
    """A node does not install its own publication (its certbot's installer writes it)."""
    publish(store, make_leaf(ca, [NAME]), node="mx1")
    assert install(store, tmp_path, NAME, utcnow(), "mx1").what == "ours"
    assert not live_file(tmp_path).exists()


class Synced:
    def __init__(self, store: MemoryStore, cache_dir: Path) -> None:
        self.reloads = 0
        self.link = Link(store.where, "mx1", InlineReactor(), InlinePool())
        self.sync = CertificateSync(self.link, store, cache_dir, NAME, clock=store.clock,
                                    interval=30, now=utcnow, installed=self.reload)

    def reload(self) -> None:
        self.reloads += 1


def test_the_periodic_check_installs_reloads_and_refuses_once(store: MemoryStore, ca: CA,
                                                              tmp_path: Path) -> None:
    """The periodic check installs a new publication and reloads TLS once; a refused one is
    logged once, not at every check."""
    node = Synced(store, tmp_path)
    node.sync.startService()
    publish(store, make_leaf(ca, [NAME]))
    store.clock.advance(30)
    assert node.reloads == 1
    publish(store, make_leaf(ca, ["other.example.com"]))
    with capturedLogs() as logs:
        for _ in range(4):
            store.clock.advance(30)
    assert text(logs).count("is rejected, not installed") == 1
    assert node.reloads == 1
    node.sync.stopService()


def test_our_certificate_is_offered_when_redis_has_none(store: MemoryStore, ca: CA,
                                                        tmp_path: Path) -> None:
    """After Redis lost its data, a node offers its own certificate, without touching the
    fencing token (an issuance under way keeps its token)."""
    leaf = make_leaf(ca, [NAME])
    live_file(tmp_path).parent.mkdir(parents=True)
    live_file(tmp_path).write_bytes(leaf.combined_pem)
    store.fences[NAME] = 4
    Synced(store, tmp_path).sync.check_all()
    published = store.certs[NAME]
    assert published.pem == leaf.combined_pem and published.node == "mx1"
    assert store.fences[NAME] == 4
