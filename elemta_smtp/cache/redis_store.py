"""The cluster's shared store on Redis (redis-py), for the daemon and the certbot plugin.

Keys, all under ``[cluster] key_prefix`` (default ``elemta:``)::

    challenge:<type>:<key>   a challenge answer (key authorization), expires (PX)
    lock:<name>              the issuance lock: the holder's secret owner value, expires (PX)
    fence:<name>             the fencing counter of <name>: INCR at every grant
    cert:<name>              hash: pem, serial, fence, node, at
    certs                    set: the names under cert:
    notice:<key>             the node that claimed (and mails) the notice, expires
    channel certificates     a message "<name>" whenever cert:<name> changes
    channel challenges       "put <type> <key>" / "delete <type> <key>" for every answer
                             shared or removed (TLS-ALPN-01 answers must be on each node's
                             disk before the CA connects: the ALPN callback cannot wait)

Renewing and releasing the lock, and publishing under a fencing token, are Lua scripts:
compare and set in one step, so a holder whose lease expired can neither extend nor end
someone else's lock, nor publish over a newer grant. Every call blocks (short socket
timeouts); the daemon makes them from worker threads. A password comes from the URL or
from ``[cluster] password_file`` and is never part of a message.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from elemta_smtp.cache.store import (
    NOTICE_TTL,
    Holder,
    Lease,
    Published,
    StoreUnavailable,
    check_challenge,
)
from elemta_smtp.errors import CacheError
from elemta_smtp.schema import mask_password

#: Seconds a Redis call may take (connecting, or waiting for an answer) before the store
#: counts as unreachable: a slow Redis must not stall an issuance check for long.
SOCKET_TIMEOUT = 3.0
CHANNEL = "certificates"
CHALLENGE_CHANNEL = "challenges"

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1])}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_PUBLISH = """
local fence
if ARGV[1] == '' then
  fence = redis.call('INCR', KEYS[2])
else
  fence = tonumber(ARGV[1])
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if fence ~= current then return {0, current} end
end
redis.call('HSET', KEYS[1], 'pem', ARGV[2], 'serial', ARGV[3], 'fence', fence,
           'node', ARGV[4], 'at', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {1, fence}
"""
_OFFER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'pem', ARGV[1], 'serial', ARGV[2],
           'fence', tonumber(redis.call('GET', KEYS[2]) or '0'), 'node', ARGV[3], 'at', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1]) or ARGV[1]
"""

T = TypeVar("T")


def read_password(path: Path) -> str:
    """The password in ``path`` (its first line); ``CacheError`` saying what to do."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CacheError(f"cannot read [cluster] password_file {path}: {reason}; make it "
                         "readable by the user elemta (and certbot) run as") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise CacheError(f"[cluster] password_file {path} is empty: write the Redis password "
                         "on its first line")
    return lines[0]


class RedisStore:
    """``store.Store`` on one Redis server (or a proxy in front of several)."""

    def __init__(self, url: str, prefix: str, password: str | None = None,
                 timeout: float = SOCKET_TIMEOUT) -> None:
        self.where = mask_password(url)
        self.prefix = prefix
        self.channel = prefix + CHANNEL
        self.challenge_channel = prefix + CHALLENGE_CHANNEL
        self._secrets = [s for s in (password, _url_password(url)) if s]
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                  "retry_on_timeout": False}
        if password is not None:
            kwargs["password"] = password
        self.client: redis.Redis = redis.Redis.from_url(url, **kwargs)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._publish = self.client.register_script(_PUBLISH)
        self._offer = self.client.register_script(_OFFER)
        self._claim = self.client.register_script(_CLAIM)

    def close(self) -> None:
        self.client.close()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def masked(self, text: str) -> str:
        """``text`` with every password elemta knows replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _do(self, call: Callable[[], T]) -> T:
        """Run one Redis call; connection, timeout and authentication problems become
        ``StoreUnavailable`` (worded without the password)."""
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(self.where, self.masked(str(exc) or type(exc).__name__)) \
                from None
        except redis.ResponseError as exc:  # NOAUTH, WRONGPASS, a read-only replica ...
            raise StoreUnavailable(self.where, self.masked(str(exc))) from None

    def ping(self) -> None:
        self._do(self.client.ping)

    # --- challenge answers ---

    def put_challenge(self, kind: str, key: str, value: bytes, ttl: float) -> None:
        check_challenge(kind, key)

        def put() -> None:
            pipe = self.client.pipeline()  # one round trip: the answer, then its announcement
            pipe.set(self.key("challenge", kind, key), value, px=max(int(ttl * 1000), 1))
            pipe.publish(self.challenge_channel, f"put {kind} {key}")
            pipe.execute()

        self._do(put)

    def get_challenge(self, kind: str, key: str) -> bytes | None:
        check_challenge(kind, key)
        found: Any = self._do(lambda: self.client.get(self.key("challenge", kind, key)))
        return bytes(found) if found is not None else None

    def delete_challenge(self, kind: str, key: str) -> None:
        check_challenge(kind, key)

        def delete() -> None:
            pipe = self.client.pipeline()
            pipe.delete(self.key("challenge", kind, key))
            pipe.publish(self.challenge_channel, f"delete {kind} {key}")
            pipe.execute()

        self._do(delete)

    # --- the issuance lock ---

    def acquire(self, name: str, node: str, lease: float) -> Lease | Holder:
        owner = f"{node} {secrets.token_hex(8)}"
        reply = self._do(lambda: self._acquire(
            keys=[self.key("lock", name), self.key("fence", name)],
            args=[owner, int(lease * 1000)]))
        if int(reply[0]) == 1:
            return Lease(name, owner, int(reply[1]))
        holder = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return Holder(holder, max(int(reply[2]), 0) / 1000)

    def renew(self, lease: Lease, seconds: float) -> bool:
        return int(self._do(lambda: self._renew(keys=[self.key("lock", lease.name)],
                                                 args=[lease.owner, int(seconds * 1000)]))) == 1

    def release(self, lease: Lease) -> None:
        self._do(lambda: self._release(keys=[self.key("lock", lease.name)], args=[lease.owner]))

    # --- certificates ---

    def publish_certificate(self, name: str, pem: bytes, serial: str, node: str,
                            fence: int | None) -> int | None:
        reply = self._do(lambda: self._publish(
            keys=[self.key("cert", name), self.key("fence", name), self.key("certs")],
            args=["" if fence is None else str(fence), pem, serial, node, f"{time.time():.3f}",
                  self.channel, name]))
        return int(reply[1]) if int(reply[0]) == 1 else None

    def offer_certificate(self, name: str, pem: bytes, serial: str, node: str) -> bool:
        return int(self._do(lambda: self._offer(
            keys=[self.key("cert", name), self.key("fence", name), self.key("certs")],
            args=[pem, serial, node, f"{time.time():.3f}", self.channel, name]))) == 1

    def current_fence(self, name: str) -> int:
        found = self._do(lambda: self.client.get(self.key("fence", name)))
        return int(found) if found is not None else 0

    def fetch_certificate(self, name: str) -> Published | None:
        record: dict[bytes, bytes] = self._do(
            lambda: cast(dict[bytes, bytes], self.client.hgetall(self.key("cert", name))))
        if not record or b"pem" not in record:
            return None

        def text(field: bytes) -> str:
            return record.get(field, b"").decode("utf-8", "replace")

        def number(field: bytes) -> float:
            try:
                return float(text(field) or 0)
            except ValueError:
                return 0.0

        return Published(name=name, pem=record[b"pem"], serial=text(b"serial"),
                         fence=int(number(b"fence")), node=text(b"node"), at=number(b"at"))

    def published_serials(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            members = cast(set[bytes], self.client.smembers(self.key("certs")))
            names = sorted(n.decode("utf-8", "replace") for n in members)
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hget(self.key("cert", name), "serial")
            serials = pipe.execute()
            return {n: s.decode("utf-8", "replace") for n, s in zip(names, serials, strict=True) if s}

        return self._do(read)

    # --- notices ---

    def claim_notice(self, key: str, node: str) -> str:
        reply = self._do(lambda: self._claim(keys=[self.key("notice", key)],
                                             args=[node, int(NOTICE_TTL * 1000)]))
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def release_notice(self, key: str, node: str) -> None:
        self._do(lambda: self._release(keys=[self.key("notice", key)], args=[node]))


def _url_password(url: str) -> str | None:
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return userinfo.partition(":")[2] or None


def open_store(redis_url: str, key_prefix: str, password_file: Path | None) -> RedisStore:
    """The store of ``[cluster]``; nothing is connected yet (the first call connects).
    ``CacheError`` when the password file cannot be read."""
    password = read_password(password_file) if password_file is not None else None
    return RedisStore(redis_url, key_prefix, password)
