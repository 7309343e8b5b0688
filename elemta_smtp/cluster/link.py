"""The daemon's line to the shared store: every call runs in a worker thread (redis-py
blocks; the reactor never waits on Redis), and the state of the line is logged once when
Redis goes away and once when it comes back, not at every failed call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.cache.store import StoreUnavailable
from elemta_smtp.net.workers import WorkerThreads

log = Logger(namespace="elemta.cluster")

T = TypeVar("T")
#: Threads for Redis calls: a lock renewal must not queue behind a slow fetch.
THREADS = 3


class ThreadReactor(Protocol):
    def callFromThread(self, f: Callable[..., Any], /, *args: object) -> None: ...


class Pool(Protocol):
    """What ``Link`` uses of a thread pool (``net.workers.WorkerThreads``)."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[[], object]) -> None: ...
    def stop(self) -> None: ...


class Link:
    """Calls into ``store`` from worker threads; ``up`` is None until the first answer,
    then True or False. ``on_back`` callables run (in the reactor) when Redis answers again
    after it was unreachable."""

    def __init__(self, where: str, node: str, reactor: ThreadReactor,
                 pool: Pool | None = None) -> None:
        self.where = where
        self.node = node
        self._reactor = reactor
        self._pool: Pool = pool or WorkerThreads(THREADS, name="elemta-redis")
        self.up: bool | None = None
        self.on_back: list[Callable[[], object]] = []

    def stop(self) -> None:
        """Finish the calls under way, then end the threads."""
        self._pool.stop()

    def call(self, func: Callable[..., T], *args: object) -> Deferred[T]:
        """``func(*args)`` in a worker thread; fires in the reactor with its result, or
        fails with its exception (``StoreUnavailable`` when Redis cannot be reached)."""
        result: Deferred[T] = Deferred()

        def done(ok: bool, value: object) -> None:
            self._reactor.callFromThread(self._settle, result, ok, value)

        try:
            self._pool.callInThreadWithCallback(done, lambda: func(*args))
        except RuntimeError:  # the pool is stopped: elemta is stopping
            return fail(StoreUnavailable(self.where, "elemta is stopping"))
        return result

    def _settle(self, result: Deferred[T], ok: bool, value: object) -> None:
        if ok:
            self.reached()
            result.callback(value)  # type: ignore[arg-type]
            return
        assert isinstance(value, Failure)
        failure = value
        if failure.check(StoreUnavailable):  # type: ignore[no-untyped-call]
            self.unreachable(failure.value.reason)  # type: ignore[union-attr]
        result.errback(failure)

    def reached(self) -> None:
        """Redis answered: say so if it had been unreachable, and catch up."""
        was, self.up = self.up, True
        if was is None:
            log.info("cluster: node {node} joined through Redis at {where}", node=self.node,
                     where=self.where)
        elif was is False:
            log.info("cluster: Redis at {where} is reachable again: catching up (certificates, "
                     "then the certificate check)", where=self.where)
            for hook in list(self.on_back):
                hook()

    def unreachable(self, reason: str) -> None:
        """Redis failed: said once per outage."""
        was, self.up = self.up, False
        if was is not False:
            log.error("cluster: Redis at {where} is unreachable ({reason}): this node keeps "
                      "serving the certificates it has and SMTP is unaffected, but nothing is "
                      "issued or renewed until Redis is back; retrying quietly",
                      where=self.where, reason=reason)
