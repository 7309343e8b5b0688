"""This daemon as a node of the cluster: the store, the line to it, the subscription,
the certificate sync, the issuance lock and the notice claims, started and stopped with
the daemon."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.cache.challenges import forget_alpn_answer, write_alpn_answer
from elemta_smtp.cache.layout import tls_alpn_dir
from elemta_smtp.cache.redis_store import RedisStore, open_store
from elemta_smtp.cache.store import StoreUnavailable
from elemta_smtp.cluster.claims import NoticeClaims
from elemta_smtp.cluster.issuance import ClusterIssuance
from elemta_smtp.cluster.link import Link, ThreadReactor
from elemta_smtp.cluster.subscriber import Subscriber
from elemta_smtp.cluster.sync import CertificateSync
from elemta_smtp.config import Config

log = Logger(namespace="elemta.cluster")


def node_name(config: Config, pid: int | None = None) -> str:
    """``[cluster] node_name``, else ``<[server] hostname>:<pid>``."""
    return config.cluster.node_name or f"{config.server.hostname}:{os.getpid() if pid is None else pid}"


class ClusterNode(MultiService):
    """Built by the daemon when ``[cluster] redis_url`` is set. ``installed`` runs after a
    certificate published by another node was written into ``live/`` (reload TLS, then
    the notice check); ``on_back`` hooks run when Redis answers again after an outage."""

    def __init__(self, config: Config, reactor: ThreadReactor, clock: IReactorTime, *,
                 now: Callable[[], datetime], installed: Callable[[], object],
                 store: RedisStore | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        cluster = config.cluster
        self.node = node_name(config)
        self.store = store or open_store(cluster.redis_url, cluster.key_prefix,
                                         cluster.password_file)
        self.link = Link(self.store.where, self.node, reactor)
        le = config.tls.letsencrypt
        self.sync = CertificateSync(self.link, self.store, le.cache_dir, le.domain,
                                    clock=clock, interval=cluster.sync_interval, now=now,
                                    installed=installed)
        self.sync.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.issuance = ClusterIssuance(self.link, self.store, self.node,
                                        lease=cluster.lock_lease, clock=clock,
                                        catch_up=self.sync.sync)
        self.claims = NoticeClaims(self.link, self.store, self.node)
        self._alpn_dir = tls_alpn_dir(le.cache_dir)
        self.subscriber = Subscriber(self.store, reactor, self.sync.sync, self._subscribed,
                                     self._challenge)
        self.link.on_back.append(self.sync.check_all)

    def _subscribed(self, ok: bool, reason: str) -> None:
        if ok:
            self.link.reached()
            self.sync.check_all()  # catch up on what was published while unsubscribed
        else:
            self.link.unreachable(reason)

    def startService(self) -> None:
        log.info("cluster: node {node}, Redis at {where}, key prefix {prefix!r}",
                 node=self.node, where=self.store.where, prefix=self.store.prefix)
        super().startService()  # type: ignore[no-untyped-call]
        self.subscriber.start()

    def stopService(self) -> Deferred[None]:
        self.subscriber.stop()
        done: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        self.link.stop()
        self.store.close()
        return done

    def _challenge(self, text: str) -> None:
        """Another host shared or removed a challenge answer. TLS-ALPN-01 answers are copied
        into (or removed from) this node's ``tls-alpn-01/`` folder at once: the HTTPS
        listener's ALPN callback runs inside the handshake and cannot wait for Redis.
        HTTP-01 answers are fetched when the CA asks (``challenge_answer``)."""
        action, kind, name = [*text.split(" "), "", ""][:3]
        if kind != "tls-alpn-01" or action not in ("put", "delete"):
            return
        if action == "delete":
            self.link.call(forget_alpn_answer, self._alpn_dir, name).addErrback(
                self._copy_failed, name)
            return

        def copy() -> bool:
            value = self.store.get_challenge(kind, name)
            if value is None:  # removed again already
                return False
            write_alpn_answer(self._alpn_dir, name, value.decode("ascii"))
            return True

        def copied(done: bool) -> None:
            if done:
                log.info("cluster: TLS-ALPN-01 answer for {name} copied from Redis (another "
                         "host's certbot asked for it)", name=name)

        self.link.call(copy).addCallbacks(copied, self._copy_failed, errbackArgs=(name,))

    def _copy_failed(self, failure: Failure, name: str) -> None:
        if failure.check(StoreUnavailable):  # type: ignore[no-untyped-call]
            return  # the link said so once
        log.error("cluster: cannot keep the TLS-ALPN-01 answer for {name} on this node: "
                  "{error}", name=name, error=failure.getErrorMessage())

    def challenge_answer(self, kind: str, key: str) -> Deferred[bytes | None]:
        """The shared answer of a challenge (None when there is none or Redis is down)."""
        done = self.link.call(self.store.get_challenge, kind, key)

        def unreachable(failure: Failure) -> None:
            failure.trap(StoreUnavailable)  # type: ignore[no-untyped-call]

        return done.addErrback(unreachable)
