"""The plugin in a cluster (``[cluster] redis_url`` in elemta.toml): challenge answers and
certificates go to the cluster's shared store too, so whichever host the CA reaches can
answer, and every host installs what this certbot obtained.

A certbot the daemon runs works under the daemon's issuance lease (``store.LEASE_ENV``):
its certificate is published only while that lease's fencing token is still current, so
a run whose lease expired while another node took over never installs anything. A certbot
run by hand publishes under a new fencing token, superseding any issuance in flight.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from certbot import errors

from elemta_smtp.cache.redis_store import RedisStore, open_store
from elemta_smtp.cache.store import StoreUnavailable, lease_from_env
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
