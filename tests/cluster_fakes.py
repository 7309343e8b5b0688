"""In-memory stand-ins for the cluster's edges, for unit tests without Redis or threads:
a store with the lock, fencing and publishing rules of ``cache/redis_store.py`` (its Lua
scripts) on a ``task.Clock``, and a "thread pool" and reactor that run everything at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import task
from twisted.python.failure import Failure

from elemta_smtp.cache.store import Holder, Lease, Published, StoreUnavailable


class InlinePool:
    """Runs each job at once, in the caller's thread."""

    stopped = False

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[[], object]) -> None:
        if self.stopped:
            raise RuntimeError("stopped")
        try:
            result: object = func()
            ok = True
        except Exception:
            result, ok = Failure(), False  # type: ignore[no-untyped-call]
        if onResult is not None:
            onResult(ok, result)

    def stop(self) -> None:
        self.stopped = True


class InlineReactor:
    def callFromThread(self, f: Callable[..., Any], /, *args: object) -> None:
        f(*args)


@dataclass
class MemoryStore:
    """``store.Store`` in memory; ``down = True`` makes every call fail as Redis would."""

    clock: task.Clock
    where: str = "redis://memory/0"
    down: bool = False
    locks: dict[str, tuple[str, float]] = field(default_factory=dict)  # owner, expiry
    fences: dict[str, int] = field(default_factory=dict)
    certs: dict[str, Published] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    answers: dict[tuple[str, str], bytes] = field(default_factory=dict)
    renewals: int = 0
    _owners: int = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable(self.where, "Connection refused")

    def _lock(self, name: str) -> tuple[str, float] | None:
        held = self.locks.get(name)
        if held is not None and held[1] <= self.clock.seconds():
            del self.locks[name]
            return None
        return held

    def put_challenge(self, kind: str, key: str, value: bytes, ttl: float) -> None:
        self._check()
        self.answers[kind, key] = value

    def get_challenge(self, kind: str, key: str) -> bytes | None:
        self._check()
        return self.answers.get((kind, key))

    def delete_challenge(self, kind: str, key: str) -> None:
        self._check()
        self.answers.pop((kind, key), None)

    def acquire(self, name: str, node: str, lease: float) -> Lease | Holder:
        self._check()
        held = self._lock(name)
        if held is not None:
            return Holder(held[0], held[1] - self.clock.seconds())
        self._owners += 1
        owner = f"{node} {self._owners:04x}"
        self.locks[name] = (owner, self.clock.seconds() + lease)
        self.fences[name] = self.fences.get(name, 0) + 1
        return Lease(name, owner, self.fences[name])

    def renew(self, lease: Lease, seconds: float) -> bool:
        self._check()
        self.renewals += 1
        held = self._lock(lease.name)
        if held is None or held[0] != lease.owner:
            return False
        self.locks[lease.name] = (lease.owner, self.clock.seconds() + seconds)
        return True

    def release(self, lease: Lease) -> None:
        self._check()
        held = self._lock(lease.name)
        if held is not None and held[0] == lease.owner:
            del self.locks[lease.name]

    def publish_certificate(self, name: str, pem: bytes, serial: str, node: str,
                            fence: int | None) -> int | None:
        self._check()
        if fence is None:
            fence = self.fences[name] = self.fences.get(name, 0) + 1
        elif fence != self.fences.get(name, 0):
            return None
        self.certs[name] = Published(name, pem, serial, fence, node, self.clock.seconds())
        return fence

    def offer_certificate(self, name: str, pem: bytes, serial: str, node: str) -> bool:
        self._check()
        if name in self.certs:
            return False
        self.certs[name] = Published(name, pem, serial, self.fences.get(name, 0), node,
                                     self.clock.seconds())
        return True

    def fetch_certificate(self, name: str) -> Published | None:
        self._check()
        return self.certs.get(name)

    def published_serials(self) -> dict[str, str]:
        self._check()
        return {name: p.serial for name, p in self.certs.items()}

    def claim_notice(self, key: str, node: str) -> str:
        self._check()
        return self.claims.setdefault(key, node)

    def release_notice(self, key: str, node: str) -> None:
        self._check()
        if self.claims.get(key) == node:
            del self.claims[key]
