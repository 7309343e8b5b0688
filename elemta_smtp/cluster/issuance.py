"""One issuance at a time in the cluster: the lock around every certbot run.

``begin`` takes the lock of the domain (``store.acquire``: a lease and a fencing token);
while it is held the lease is renewed every third of its length, so it outlives a long
certbot run but not a dead holder. Right after acquiring, the holder looks at what is
published (another node may have finished the work meanwhile: the certificate manager
checks again before it runs certbot). The certbot it runs learns the fencing token from
its environment (``store.LEASE_ENV``) and the elemta installer publishes under it, so a
holder whose lease ran out while another node took over never installs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.cache.store import Holder, Lease, Store, StoreUnavailable, lease_env, owner_node
from elemta_smtp.cluster.link import Link

log = Logger(namespace="elemta.cluster")


@dataclass(frozen=True)
class Permit:
    """May this node run certbot now? When not, ``reason`` says why and ``retry_after``
    when to ask again (seconds; None: at the next regular check, or when Redis is back)."""

    granted: bool
    lease: Lease | None = None
    reason: str = ""
    retry_after: float | None = None


GO = Permit(True)  # a single host: no lock to take


def retry_after(holder: Holder, lease: float) -> float:
    """When to ask again after ``holder`` was found holding the lock: right after its lease
    would end if it stopped renewing (never longer than one lease), plus a second."""
    return min(max(holder.remaining, 0.0), lease) + 1.0


def renew_every(lease: float) -> float:
    """How often a holder renews its lease: three chances before it runs out."""
    return lease / 3


class ClusterIssuance:
    """The issuance lock as the certificate manager uses it (``begin``/``end``), and the
    environment of the certbot it runs (``certbot_env``)."""

    def __init__(self, link: Link, store: Store, node: str, *, lease: float,
                 clock: IReactorTime, catch_up: Callable[[str], Deferred[Any]]) -> None:
        self._link = link
        self._store = store
        self._node = node
        self._lease = lease
        self._clock = clock
        self._catch_up = catch_up
        self._held: Lease | None = None
        self._renewing: LoopingCall | None = None
        self._last_holder = ""

    def begin(self, name: str) -> Deferred[Permit]:
        """Take the lock for ``name``; on success, catch up with what is published first."""
        return Deferred.fromCoroutine(self._begin(name))

    async def _begin(self, name: str) -> Permit:
        try:
            got = await self._link.call(self._store.acquire, name, self._node, self._lease)
        except StoreUnavailable as exc:
            return Permit(False, reason=f"Redis is unreachable ({exc.reason})")
        if isinstance(got, Holder):
            node = owner_node(got.owner)
            delay = retry_after(got, self._lease)
            if node != self._last_holder:
                self._last_holder = node
                log.info("cluster: node {holder} is obtaining or renewing the certificate for "
                         "{name}; this node waits (next look in {delay:.0f}s)", holder=node,
                         name=name, delay=delay)
            return Permit(False, reason=f"node {node} holds the issuance lock", retry_after=delay)
        self._last_holder = ""
        self._held = got
        log.info("cluster: this node ({node}) holds the issuance lock for {name} (fencing "
                 "token {fence}, lease {lease:g}s)", node=self._node, name=name,
                 fence=got.fence, lease=self._lease)
        self._start_renewing(got)
        try:
            await self._catch_up(name)
        except Exception:  # catching up is best effort: the manager checks again anyway
            log.failure("cluster: catching up before issuing failed")
        return Permit(True, lease=got)

    def _start_renewing(self, lease: Lease) -> None:
        loop = LoopingCall(self._renew, lease)
        loop.clock = self._clock
        self._renewing = loop
        loop.start(renew_every(self._lease), now=False).addErrback(
            lambda f: log.failure("cluster: lease renewal stopped", failure=f))

    def _renew(self, lease: Lease) -> Deferred[None]:
        done = self._link.call(self._store.renew, lease, self._lease)

        def renewed(still_ours: bool) -> None:
            if not still_ours and self._held is lease:
                self._held = None
                self._stop_renewing()
                log.warn("cluster: the issuance lock for {name} (fencing token {fence}) was "
                         "lost: its lease ended before it was renewed (Redis was unreachable "
                         "too long); if another node has taken over, the certbot running here "
                         "will not install its certificate", name=lease.name, fence=lease.fence)

        def failed(failure: Failure) -> None:
            failure.trap(StoreUnavailable)  # type: ignore[no-untyped-call]  # said once by Link; the next renewal tries again

        return done.addCallbacks(renewed, failed)

    def _stop_renewing(self) -> None:
        if self._renewing is not None and self._renewing.running:
            self._renewing.stop()
        self._renewing = None

    def end(self, permit: Permit) -> Deferred[None]:
        """Release the lock of ``permit`` (if still ours)."""
        lease = permit.lease
        if lease is None:
            return succeed(None)
        if self._held is lease:
            self._held = None
        self._stop_renewing()
        done = self._link.call(self._store.release, lease)
        return done.addCallbacks(lambda _: None, lambda f: f.trap(StoreUnavailable) and None)

    def certbot_env(self) -> dict[str, str]:
        """What the certbot run now must know: the lease it works under."""
        return lease_env(self._held, self._node) if self._held is not None else {}
