"""Certificates published by another node, installed here: each one goes through the
cache's validated write (``live.write_published``: a bad one is never installed, and this
node logs why, once), then the TLS contexts reload. A message on the ``certificates``
channel triggers it at once; a check every ``[cluster] sync_interval`` is the fallback and
doubles as the probe that notices Redis going away and coming back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.cache import layout, live
from elemta_smtp.cache.store import Published, Store, StoreUnavailable
from elemta_smtp.cluster.link import Link
from elemta_smtp.errors import CacheError, InvalidCertificate

log = Logger(namespace="elemta.cluster")


@dataclass(frozen=True)
class Outcome:
    """What became of one published certificate here. ``what``: "absent" (nothing
    published), "ours" (this node published it), "current" (already served), "older"
    (ours is newer: kept), "rejected" (invalid: ``reason``), "installed" (``path``)."""

    what: str
    published: Published | None = None
    reason: str = ""
    path: Path | None = None
    local_serial: str = ""


def local_facts(cache_dir: Path, name: str) -> live.Installed | None:
    """The certificate in ``live/<name>.pem``, or None when there is none (or it is unreadable)."""
    try:
        return live.read_installed(layout.certificate_path(cache_dir, name))
    except CacheError:
        return None


def install(store: Store, cache_dir: Path, name: str, now: datetime, node: str) -> Outcome:
    """Fetch what is published for ``name`` and install it if it is newer than ours and
    valid; what this ``node`` published itself its own certbot installs. Blocking: runs in
    a worker thread."""
    published = store.fetch_certificate(name)
    if published is None:
        return Outcome("absent")
    if published.node == node:
        return Outcome("ours", published)
    local = local_facts(cache_dir, name)
    here = local.serial if local is not None else ""
    if local is not None and _same_file(local.path, published.pem):
        return Outcome("current", published, local_serial=here)
    try:
        _path, bundle = live.check_published(cache_dir, name, published.pem, published.serial, now)
        if local is not None and local.not_after >= bundle.leaf.not_valid_after_utc:
            return Outcome("older", published, local_serial=here)
        path = live.write_published(cache_dir, name, published.pem, published.serial, now)
    except InvalidCertificate as exc:
        return Outcome("rejected", published, reason=exc.reason, local_serial=here)
    except CacheError as exc:
        return Outcome("rejected", published, reason=str(exc), local_serial=here)
    return Outcome("installed", published, path=path, local_serial=here)


def _same_file(path: Path, pem: bytes) -> bool:
    try:
        return live.read_bytes(path) == pem
    except CacheError:
        return False


def offer(store: Store, cache_dir: Path, name: str, node: str) -> bool:
    """Publish our own valid ``live/<name>.pem`` when nothing is published for it (Redis
    lost its data, or this node had it first): the fencing token is left alone. Blocking."""
    local = local_facts(cache_dir, name)
    if local is None:
        return False
    try:
        pem = live.read_bytes(local.path)
    except CacheError:
        return False
    return store.offer_certificate(name, pem, local.serial, node)


class CertificateSync(Service):
    """Installs what the cluster publishes; ``installed()`` runs (in the reactor) after a
    certificate was written to ``live/``, to reload TLS."""

    name = "cluster-sync"

    def __init__(self, link: Link, store: Store, cache_dir: Path, domain: str, *,
                 clock: IReactorTime, interval: float, now: Callable[[], datetime],
                 installed: Callable[[], object]) -> None:
        self._link = link
        self._store = store
        self._cache_dir = cache_dir
        self._domain = domain
        self._clock = clock
        self._interval = interval
        self._now = now
        self._installed = installed
        self._known: dict[str, str] = {}  # name -> the published serial last handled
        self._said: set[tuple[str, str, str]] = set()  # (what, name, serial/fence) said once
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        loop = LoopingCall(self.check_all)
        loop.clock = self._clock
        self._loop = loop
        loop.start(self._interval, now=True).addErrback(
            lambda f: log.failure("cluster: periodic certificate check stopped", failure=f))

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check_all(self) -> Deferred[None]:
        """The periodic check: every published name whose serial changed since we last
        looked is synced; our own certificate is offered when nothing is published."""
        done = self._link.call(self._store.published_serials)

        def compare(serials: dict[str, str]) -> Deferred[object] | None:
            for name, serial in serials.items():
                if self._known.get(name) != serial:
                    self.sync(name)
            if self._domain and self._domain not in serials:
                return self._link.call(offer, self._store, self._cache_dir, self._domain,
                                       self._link.node)
            return None

        done.addCallback(compare)
        return done.addErrback(self._quiet).addCallback(lambda _: None)

    def sync(self, name: str) -> Deferred[Outcome | None]:
        """Fetch and, if newer and valid, install the certificate published for ``name``."""
        done = self._link.call(install, self._store, self._cache_dir, name, self._now(),
                               self._link.node)
        return done.addCallback(self._report, name).addErrback(self._quiet)

    def _report(self, outcome: Outcome, name: str) -> Outcome:
        published = outcome.published
        if published is None:
            return outcome
        self._known[name] = published.serial
        fields = {"name": name, "serial": published.serial, "node": published.node,
                  "fence": published.fence, "here": outcome.local_serial or "none"}
        if outcome.what == "installed":
            log.info("cluster: installed the certificate for {name} published by {node}: serial "
                     "{serial} (fencing token {fence}) into {path}; reloading",
                     path=str(outcome.path), **fields)
            self._installed()
        elif self._once(outcome.what, name, f"{published.serial}/{published.fence}"):
            if outcome.what == "rejected":
                log.error("cluster: the certificate for {name} published by {node} (serial "
                          "{serial}, fencing token {fence}) is rejected, not installed; still "
                          "serving serial {here}: {reason}", reason=outcome.reason, **fields)
            elif outcome.what == "older":
                log.info("cluster: the certificate for {name} published by {node} (serial "
                         "{serial}) does not expire later than ours (serial {here}): keeping "
                         "ours", **fields)
        return outcome

    def _once(self, what: str, name: str, version: str) -> bool:
        key = (what, name, version)
        if key in self._said:
            return False
        self._said.add(key)
        return True

    @staticmethod
    def _quiet(failure: Failure) -> None:
        """Redis unreachable: ``Link`` has said so once; anything else is a bug, logged."""
        if not failure.check(StoreUnavailable):  # type: ignore[no-untyped-call]
            log.failure("cluster: certificate sync failed", failure=failure)
