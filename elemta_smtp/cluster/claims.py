"""Each notice mailed once per cluster: before mailing, a node claims the notice in Redis
(``store.claim_notice``); the first claim wins, the other nodes record it as sent without
mailing. A node whose mail fails gives the claim back, so another one can send it."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.cache.store import Store, StoreUnavailable
from elemta_smtp.cluster.link import Link

log = Logger(namespace="elemta.cluster")


class NoticeClaims:
    def __init__(self, link: Link, store: Store, node: str) -> None:
        self._link = link
        self._store = store
        self._node = node

    def claim(self, key: str) -> Deferred[bool | None]:
        """True: this node mails the notice; False: another node does; None: Redis is
        unreachable, so nobody can tell (the notice stays due for the next check)."""
        done = self._link.call(self._store.claim_notice, key, self._node)

        def decided(holder: str) -> bool:
            if holder != self._node:
                log.info("cluster: notice {key} is mailed by node {holder}", key=key,
                         holder=holder)
            return holder == self._node

        def unreachable(failure: Failure) -> None:
            failure.trap(StoreUnavailable)  # type: ignore[no-untyped-call]

        return done.addCallbacks(decided, unreachable)

    def release(self, key: str) -> Deferred[None]:
        done = self._link.call(self._store.release_notice, key, self._node)
        return done.addCallbacks(lambda _: None, lambda f: f.trap(StoreUnavailable) and None)
