"""The certificate manager as the daemon runs it: what it is told about the served
certificate, certbot through the reactor, notices by SMTP; in a cluster, the issuance lock,
the lease given to certbot, and the notice claims."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred

from elemta_smtp.acme.mailer import ConnectReactor, Mailer
from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.runner import Clock, ProcessRunner, RunResult, SpawnReactor
from elemta_smtp.cluster.node import ClusterNode
from elemta_smtp.config import Config
from elemta_smtp.daemon import DAEMON_PID_ENV
from elemta_smtp.tls.context import ServedCertificate

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics


def facts_from_served(served: Iterable[ServedCertificate], domain: str,
                      cache_dir: Path) -> CertFacts | None:
    """Pick the certificate served for ``domain`` out of ``ServerTLS.served()``: one
    from the cache's live/ folder that names the domain, the latest expiring;
    else the bootstrap certificate (as ``is_bootstrap``); else None."""
    live = (cache_dir / "live").resolve()
    best: CertFacts | None = None
    bootstrap: CertFacts | None = None
    for item in served:
        facts = CertFacts(serial=item.serial_hex, not_before=item.not_before,
                          not_after=item.not_after, names=tuple(item.names),
                          is_bootstrap=item.is_bootstrap)
        if facts.is_bootstrap:
            bootstrap = facts
            continue
        in_live = item.source.resolve().parent == live
        if in_live and facts.covers(domain) and (best is None or facts.not_after > best.not_after):
            best = facts
    return best or bootstrap


class ServedSource(Protocol):
    """What the manager needs of ``ServerTLS``."""

    def served(self) -> list[ServedCertificate]: ...
    def reload(self) -> object: ...


class DaemonReactor(Clock, SpawnReactor, ConnectReactor, Protocol):
    """The reactor interfaces the manager, runner and mailer use together."""


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


def build_manager(config: Config, tls: ServedSource, reactor: DaemonReactor,
                  cluster: ClusterNode | None = None,
                  metrics: Metrics | None = None) -> CertManager:
    """The manager as the daemon runs it: certbot through the reactor, notices by SMTP.

    The certbot it runs finds this daemon's pid in ``DAEMON_PID_ENV``, so the elemta
    installer does not SIGHUP it: the manager reloads once, itself, when certbot ends. In a
    cluster it runs certbot under the issuance lock, tells certbot the lease, and claims
    each notice before mailing it."""
    le = config.tls.letsencrypt

    def served() -> CertFacts | None:
        return facts_from_served(tls.served(), le.domain, le.cache_dir)

    env = {**os.environ, DAEMON_PID_ENV: str(os.getpid())}
    mailer = Mailer(config, reactor)
    if cluster is None:
        return CertManager(config, served, reactor, ProcessRunner(reactor, env=env), mailer,
                           reload=tls.reload, metrics=metrics)
    runner = LeaseRunner(reactor, env, cluster.issuance.certbot_env)
    return CertManager(config, served, reactor, runner, mailer, reload=tls.reload,
                       coordinator=cluster.issuance, claims=cluster.claims,
                       metrics=metrics)
