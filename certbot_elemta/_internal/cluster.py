"""The plugin in a cluster (``[cluster] redis_url`` in elemta.toml): challenge answers and
certificates go to the cluster's shared store too, so whichever host the CA reaches can
answer, and every host installs what this certbot obtained.

A certbot the daemon runs works under the daemon's issuance lease (``store.LEASE_ENV``):
its certificate is published only while that lease's fencing token is still current, so
a run whose lease expired while another node took over never installs anything. A certbot
run by hand publishes under a new fencing token, superseding any issuance in flight.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from certbot import errors

from elemta_smtp.cache.redis_store import RedisStore, open_store
from elemta_smtp.cache.store import CHALLENGE_TTL, StoreUnavailable, lease_from_env
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError


def shared_store(elemta: Config) -> RedisStore | None:
    """The cluster's store, or None on a single host."""
    cluster = elemta.cluster
    if not cluster.enabled:
        return None
    try:
        return open_store(cluster.redis_url, cluster.key_prefix, cluster.password_file)
    except CacheError as exc:
        raise errors.PluginError(f"Could not use the cluster's Redis: {exc}.") from exc


logger = logging.getLogger(__name__)


class SharedAnswers:
    """Challenge answers put where every host of the cluster finds them (HTTP-01 by token,
    TLS-ALPN-01 by name), and removed again; nothing at all on a single host."""

    def __init__(self, store: RedisStore | None) -> None:
        self.store = store

    def share(self, kind: str, key: str, value: str) -> None:
        """``PluginError`` when Redis cannot be reached: the CA may ask any host."""
        if self.store is None:
            return
        try:
            self.store.put_challenge(kind, key, value.encode("ascii"), CHALLENGE_TTL)
        except StoreUnavailable as exc:
            raise errors.PluginError(unreachable(
                self.store, exc, f"share the {kind.upper()} answer",
                "The CA may ask any host of the cluster, and the others could not answer.")) \
                from exc

    def unshare(self, kind: str, key: str) -> None:
        """Remove a shared answer; one Redis cannot remove now expires by itself."""
        if self.store is None:
            return
        try:
            self.store.delete_challenge(kind, key)
        except StoreUnavailable as exc:
            logger.warning("Could not remove the %s answer %s from the cluster's Redis at %s "
                           "(%s); it expires within %d minutes.", kind.upper(), key,
                           self.store.where, exc.reason, CHALLENGE_TTL // 60)

    def close(self) -> None:
        """Close the connection (it reconnects if another round of challenges comes)."""
        if self.store is not None:
            self.store.close()


def unreachable(store: RedisStore, exc: StoreUnavailable, doing: str, instead: str) -> str:
    """The sentence for a store that cannot be reached while ``doing`` something."""
    return (f"Could not {doing} in the cluster's Redis at {store.where}: {exc.reason}. "
            f"{instead} Check that Redis runs and that [cluster] redis_url and password_file "
            "in elemta.toml are right, then run certbot again.")


def publish(store: RedisStore, name: str, pem: bytes, serial: str,
            environ: Mapping[str, str] = os.environ) -> int:
    """Publish the combined PEM of ``name`` for every host; returns its fencing token.
    ``PluginError`` when Redis cannot be reached or another node has taken over."""
    lease = lease_from_env(environ)
    if lease is not None and lease[0] == name:
        _, fence, node = lease
    else:
        fence, node = None, f"{socket.gethostname()}:certbot:{os.getpid()}"
    try:
        published = store.publish_certificate(name, pem, serial, node, fence)
        current = store.current_fence(name) if published is None else published
    except StoreUnavailable as exc:
        raise errors.PluginError(unreachable(
            store, exc, f"publish the certificate for {name}",
            "It is not installed on this host either: a certificate the other hosts cannot "
            "get would split the cluster (certbot keeps it in its lineage; 'certbot install "
            f"--cert-name {name} -i elemta' installs it once Redis is back).")) from exc
    if published is None:
        raise errors.PluginError(
            f"Not installing the certificate for {name} (serial {serial}): while this certbot "
            f"ran, its issuance lease (fencing token {fence}) ran out and another node took "
            f"over (the cluster is at fencing token {current}); that node's certificate is "
            "the one every host serves.")
    return published
