"""The certificate managers as the daemon runs them: what they are told about the served
certificates, certbot through the reactor (one run at a time), the CA's renewal
information and the DNS lookups in threads, notices by SMTP; in a cluster, the issuance
lock, the lease given to certbot, and the notice claims."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool

from elemta_smtp.acme import ari, arifetch
from elemta_smtp.acme.dane import NameCheck, check_names, mx_hosts
from elemta_smtp.acme.mailer import ConnectReactor, Mailer
from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.runner import Clock, ProcessRunner, RunResult, SpawnReactor
from elemta_smtp.acme.slots import Slot, slots
from elemta_smtp.cache.layout import live_name
from elemta_smtp.cluster.node import ClusterNode
from elemta_smtp.config import Config
from elemta_smtp.daemon import DAEMON_PID_ENV
from elemta_smtp.tls.context import ServedCertificate

T = TypeVar("T")


def facts_of(item: ServedCertificate) -> CertFacts:
    """The manager's view of one served certificate (its key's TLSA value and ARI id too)."""
    leaf = item.leaf
    return CertFacts(serial=item.serial_hex, not_before=item.not_before,
                     not_after=item.not_after, names=tuple(item.names),
                     is_bootstrap=item.is_bootstrap, key_type=item.key_kind,
                     tlsa=f"3 1 1 {item.spki_sha256}" if item.spki_sha256 else "",
                     ari_id=(ari.cert_id(leaf) or "") if leaf is not None else "")


if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics


def facts_from_served(served: Iterable[ServedCertificate], domain: str,
                      cache_dir: Path, variant: str = "") -> CertFacts | None:
    """Pick the certificate served for ``domain`` out of ``ServerTLS.served()``: one
    from the cache's live/ folder that names the domain, the latest expiring;
    else the bootstrap certificate (as ``is_bootstrap``); else None. ``variant`` "rsa" picks
    among the live/<name>.rsa.pem files instead (key_type = "ecdsa+rsa")."""
    live = (cache_dir / "live").resolve()
    best: CertFacts | None = None
    bootstrap: CertFacts | None = None
    for item in served:
        facts = facts_of(item)
        if facts.is_bootstrap:
            bootstrap = facts
            continue
        in_live = item.source.resolve().parent == live
        parsed = live_name(item.source.name)
        same_variant = (parsed[1] if parsed else "") == variant
        if in_live and same_variant and facts.covers(domain) and \
                (best is None or facts.not_after > best.not_after):
            best = facts
    if variant:
        return best  # the bootstrap stands in for the first certificate only
    return best or bootstrap


class ServedSource(Protocol):
    """What the manager needs of ``ServerTLS``."""

    def served(self) -> list[ServedCertificate]: ...
    def reload(self) -> object: ...


class DaemonReactor(Clock, SpawnReactor, ConnectReactor, Protocol):
    """The reactor interfaces the manager, runner and mailer use together."""


class QueuedRunner:
    """certbot runs one at a time (two lineages of key_type = "ecdsa+rsa" share certbot's
    folders, which certbot locks): a run waits for the one before it."""

    def __init__(self, runner: ProcessRunner | LeaseRunner) -> None:
        self._runner = runner
        self._lock = DeferredLock()

    def run(self, argv: Sequence[str], timeout: float) -> Deferred[RunResult]:
        return self._lock.run(self._runner.run, argv, timeout)


def in_thread(reactor: object, work: Callable[[], T]) -> Deferred[T]:
    """``work()`` in the reactor's thread pool; its result back on the reactor thread."""
    pool = cast(Any, reactor).getThreadPool()
    return deferToThreadPool(cast(Any, reactor), pool, work)


class ThreadedAri:
    """``ariwatch.AriSource``: ``arifetch.fetch`` in a thread."""

    def __init__(self, reactor: object) -> None:
        self._reactor = reactor

    def fetch(self, directory_url: str, ident: str, now: datetime) -> Deferred[ari.Answer]:
        return in_thread(self._reactor, lambda: arifetch.fetch(directory_url, ident, now))


class ThreadedDane:
    """``danewatch.DaneWatch``: the TLSA lookups for the served certificate of a slot, in a
    thread (dnspython blocks), against ``[tls.dane] resolver`` or the system's."""

    def __init__(self, config: Config, tls: ServedSource, slot: Slot, reactor: object) -> None:
        self._config = config
        self._tls = tls
        self._slot = slot
        self._reactor = reactor

    def _lookup(self, item: ServedCertificate) -> list[NameCheck]:
        from elemta_smtp.acme import danecheck  # noqa: PLC0415  (dnspython: only when checking)

        assert item.leaf is not None
        hosts = mx_hosts(self._config, item.names)
        found = danecheck.lookup_tlsa(self._config.tls.dane.resolver or None, hosts)
        return check_names(found, item.leaf, item.chain)

    def check(self, facts: CertFacts) -> Deferred[list[NameCheck]]:
        item = next((i for i in self._tls.served() if i.serial_hex == facts.serial
                     and i.leaf is not None), None)
        if item is None:
            done: Deferred[list[NameCheck]] = Deferred()
            done.callback([])
            return done
        return in_thread(self._reactor, lambda: self._lookup(item))


class LeaseRunner:
    """Runs certbot with the environment of the moment: the cluster lease it works under
    (``extra()``) added to ``env``."""

    def __init__(self, reactor: SpawnReactor, env: Mapping[str, str],
                 extra: Callable[[], Mapping[str, str]]) -> None:
        self._reactor = reactor
        self._env = dict(env)
        self._extra = extra

    def run(self, argv: Sequence[str], timeout: float) -> Deferred[RunResult]:
        return ProcessRunner(self._reactor, env={**self._env, **self._extra()}).run(argv, timeout)


def build_managers(config: Config, tls: ServedSource, reactor: DaemonReactor,
                   cluster: ClusterNode | None = None,
                   metrics: Metrics | None = None) -> list[CertManager]:
    """The managers as the daemon runs them, one per certificate ``key_type`` asks for:
    certbot through the reactor, notices by SMTP.

    The certbot they run finds this daemon's pid in ``DAEMON_PID_ENV``, so the elemta
    installer does not SIGHUP it: a manager reloads once, itself, when certbot ends. In a
    cluster they run certbot under the issuance lock, tell certbot the lease, and claim
    each notice before mailing it."""
    le = config.tls.letsencrypt
    env = {**os.environ, DAEMON_PID_ENV: str(os.getpid())}
    base: ProcessRunner | LeaseRunner = ProcessRunner(reactor, env=env) if cluster is None \
        else LeaseRunner(reactor, env, cluster.issuance.certbot_env)
    runner = QueuedRunner(base)
    mailer = Mailer(config, reactor)
    managers = []
    for slot in slots(config):
        def served(variant: str = slot.variant) -> CertFacts | None:
            return facts_from_served(tls.served(), le.domain, le.cache_dir, variant)

        managers.append(CertManager(
            config, served, reactor, runner, mailer, reload=tls.reload, slot=slot,
            ari=ThreadedAri(reactor), dane=ThreadedDane(config, tls, slot, reactor),
            coordinator=cluster.issuance if cluster is not None else None,
            claims=cluster.claims if cluster is not None else None,
            metrics=metrics))
    return managers


def build_manager(config: Config, tls: ServedSource, reactor: DaemonReactor,
                  cluster: ClusterNode | None = None,
                  metrics: Metrics | None = None) -> CertManager:
    """The manager of live/<domain>.pem (``build_managers``' first)."""
    return build_managers(config, tls, reactor, cluster, metrics)[0]
