"""The certbot plugin with a [cluster] config against a real redis-server: HTTP-01 answers
are shared (and removed), certificates are published under the daemon's lease, a stale
lease installs nothing anywhere, and an unreachable Redis installs nothing either. And a
real daemon answers HTTP-01 with what another host's certbot put in Redis."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from certbot import errors

from elemta_smtp.cache import layout
from elemta_smtp.cache.redis_store import RedisStore
from elemta_smtp.cache.store import LEASE_ENV, Lease
from elemta_smtp.units import Address
from tests.plugin_support import (
    CONFIG,
    Root,
    achall,
    alpn_achall,
    display,
    install,
    make_lineage,
    root,
)
from tests.redis_server import RedisServer, missing_redis, running_redis
from tests.support import Setup, free_port, http_get, running_daemon, wait_until

__all__ = ["display", "root"]  # fixtures
pytestmark = pytest.mark.usefixtures("display")
NAME = "mail.example.com"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path_factory.mktemp("redis"), password="pw") as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer, root: Root, request: pytest.FixtureRequest,
          ) -> Iterator[RedisStore]:
    """The cluster store, with ``root``'s elemta.toml pointing at it (own key prefix)."""
    prefix = f"{request.node.name[:40]}:"
    root.write(CONFIG.format(root=root.path, http_port=free_port()) +
               f'\n[cluster]\nredis_url = "{redis_server.url}"\nkey_prefix = "{prefix}"\n')
    s = RedisStore(redis_server.url, prefix)
    yield s
    s.close()


def live(root: Root) -> Path:
    return layout.certificate_path(root.cache_dir, NAME)


def test_published_under_the_daemons_current_lease(root: Root, store: RedisStore,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   display: io.StringIO) -> None:
    """A certbot run under the daemon's current lease publishes the combined PEM under that
    fencing token, then installs it locally: the same bytes in Redis and in live/."""
    lease = store.acquire(NAME, "mx1", 60)
    assert isinstance(lease, Lease)
    monkeypatch.setenv(LEASE_ENV, f"{NAME} {lease.fence} mx1")
    install(root.plugin("install"), make_lineage(root.live_dir, [NAME]))
    published = store.fetch_certificate(NAME)
    assert published is not None and (published.fence, published.node) == (lease.fence, "mx1")
    assert published.pem == live(root).read_bytes()
    assert "Published the certificate for mail.example.com" in display.getvalue()


def test_a_stale_lease_installs_nothing(root: Root, store: RedisStore,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A certbot whose lease ran out while another node took over is refused: nothing is
    published and nothing is written to live/, and the error says why."""
    stale = store.acquire(NAME, "mx1", 60)
    assert isinstance(stale, Lease)
    store.release(stale)
    assert isinstance(store.acquire(NAME, "mx2", 60), Lease)
    monkeypatch.setenv(LEASE_ENV, f"{NAME} {stale.fence} mx1")
    with pytest.raises(errors.PluginError, match="another node took over"):
        install(root.plugin("install"), make_lineage(root.live_dir, [NAME]))
    assert store.fetch_certificate(NAME) is None
    assert not live(root).exists()


def test_by_hand_it_supersedes(root: Root, store: RedisStore,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """certbot run by hand (no lease) publishes under a new fencing token."""
    monkeypatch.delenv(LEASE_ENV, raising=False)
    held = store.acquire(NAME, "mx1", 60)
    assert isinstance(held, Lease)
    install(root.plugin("install"), make_lineage(root.live_dir, [NAME]))
    published = store.fetch_certificate(NAME)
    assert published is not None and published.fence == held.fence + 1
    assert live(root).exists()


def test_unreachable_redis_installs_nothing(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Redis unreachable the certificate is not installed on this host either, and the
    error says what to do (without the password)."""
    root.write(CONFIG.format(root=root.path, http_port=9) +
               f'\n[cluster]\nredis_url = "redis://:hunter2@127.0.0.1:{free_port()}/0"\n')
    with pytest.raises(errors.PluginError) as info:
        install(root.plugin("install"), make_lineage(root.live_dir, [NAME]))
    assert "Connection refused" in str(info.value) and "hunter2" not in str(info.value)
    assert "certbot install --cert-name mail.example.com -i elemta" in str(info.value)
    assert not live(root).exists()


def test_answers_are_shared_and_removed(root: Root, store: RedisStore) -> None:
    """perform() puts each HTTP-01 answer in Redis too; cleanup() removes it there."""
    plugin = root.plugin("certonly")
    plugin.prepare()
    challenge = achall(token=b"shared-token-0123456789")
    assert len(plugin.perform([challenge])) == 1
    token = challenge.chall.encode("token")
    _, validation = challenge.response_and_validation()
    assert store.get_challenge("http-01", token) == validation.encode()
    plugin.cleanup([challenge])
    assert store.get_challenge("http-01", token) is None


def test_daemon_answers_from_the_shared_store(redis_server: RedisServer, tmp_path: Path) -> None:
    """A daemon that has no file for a token answers the CA with the answer another host
    put in Redis (200 text/plain); a token nowhere is 404."""
    setup = Setup(tmp_path / "node")
    setup.write({"cluster": {"redis_url": redis_server.url, "key_prefix": "http:"}})
    store = RedisStore(redis_server.url, "http:")
    try:
        store.put_challenge("http-01", "from-another-host", b"from-another-host.thumb", 60)
        with running_daemon(setup) as daemon:
            status, ctype, body = http_get(setup.http_port,
                                           "/.well-known/acme-challenge/from-another-host")
            assert (status, ctype, body) == (200, "text/plain", b"from-another-host.thumb")
            assert "(from the cluster's store)" in daemon.log()
            assert http_get(setup.http_port, "/.well-known/acme-challenge/nowhere")[0] == 404
    finally:
        store.close()


def test_tls_alpn_answers_are_shared_and_removed(root: Root, store: RedisStore) -> None:
    """perform() puts each TLS-ALPN-01 answer in Redis too (keyed by the name, so any host
    answers the CA), cleanup() removes it there, like HTTP-01."""
    from certbot_elemta._internal.tlsalpn01 import TLSALPN01Responder, key_authorization

    challenge = alpn_achall(NAME)
    responder = TLSALPN01Responder(root.cache_dir, Address("127.0.0.1", free_port()),
                                   shared=store)
    responder.perform([challenge])  # no daemon there: it answers itself and checks itself
    try:
        assert store.get_challenge("tls-alpn-01", NAME) == key_authorization(challenge).encode()
    finally:
        responder.cleanup([challenge])
    assert store.get_challenge("tls-alpn-01", NAME) is None


def test_node_copies_shared_tls_alpn_answers_and_answers_the_ca(redis_server: RedisServer,
                                                                 tmp_path: Path) -> None:
    """A node with the HTTPS listener copies a TLS-ALPN-01 answer another host shared in
    Redis onto its own disk at once (the ALPN callback cannot wait for Redis), answers an
    acme-tls/1 handshake for that name with the RFC 8737 certificate for that key
    authorization, and forgets it when the other host removes it."""
    from elemta_smtp.cache.tlsalpn import validates
    from tests.integration.test_https_listener import handshake

    setup = Setup(tmp_path / "node")
    https_port = free_port()
    setup.write({"cluster": {"redis_url": redis_server.url, "key_prefix": "alpn:"},
                 "tls.letsencrypt": {"https_addr": f"127.0.0.1:{https_port}",
                                     "challenge": "tls-alpn-01"}})
    store = RedisStore(redis_server.url, "alpn:")
    copied = setup.cache_dir / "tls-alpn-01" / NAME
    try:
        with running_daemon(setup) as daemon:
            daemon.wait_for_log("cluster: node")
            daemon.wait_for_log("listening for HTTPS")
            key_auth = b"token-from-another-host.thumbprint"
            store.put_challenge("tls-alpn-01", NAME, key_auth, 60)
            wait_until(copied.exists, "the shared answer copied to this node", daemon=daemon)
            assert copied.read_bytes() == key_auth
            daemon.wait_for_log(f"TLS-ALPN-01 answer for {NAME} copied from Redis")
            cert, selected, received = handshake(https_port, NAME, ["acme-tls/1"])
            assert selected == "acme-tls/1" and received == b""
            assert validates(cert, NAME, key_auth) is None
            store.delete_challenge("tls-alpn-01", NAME)
            wait_until(lambda: not copied.exists(), "the removed answer gone from this node",
                       daemon=daemon)
    finally:
        store.close()
