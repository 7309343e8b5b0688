"""The store seam's single-host implementation is the cache folder as it always was, and
the rules both implementations share (challenge types and keys, the lease environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import read_answer
from elemta_smtp.cache.store import CHALLENGE_KEYS, Lease, LocalStore, check_challenge
from elemta_smtp.errors import ChallengeError


def test_local_store_keeps_http01_answers_in_the_webroot(tmp_path: Path) -> None:
    """On one host an HTTP-01 answer is the file the daemon's listener serves, 0644."""
    store = LocalStore(tmp_path)
    store.put_challenge("http-01", "tok-1", b"tok-1.thumb", 60)
    folder = layout.challenge_dir(tmp_path)
    assert read_answer(folder, "tok-1") == b"tok-1.thumb"
    assert (folder / "tok-1").stat().st_mode & 0o777 == 0o644
    assert store.get_challenge("http-01", "tok-1") == b"tok-1.thumb"
    store.delete_challenge("http-01", "tok-1")
    assert not (folder / "tok-1").exists()


def test_local_store_lock_is_always_ours_and_nothing_is_shared(tmp_path: Path) -> None:
    """A single host never waits for a lock, publishes nowhere and mails every notice."""
    store = LocalStore(tmp_path)
    first, second = store.acquire("mail.example.com", "mx1", 60), \
        store.acquire("mail.example.com", "mx1", 60)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert second.fence > first.fence
    assert store.fetch_certificate("mail.example.com") is None
    assert store.published_serials() == {}
    assert store.claim_notice("renewed:0a", "mx1") == "mx1"


@pytest.mark.parametrize(("kind", "key"), [
    ("http-01", "../../etc/passwd"), ("http-01", ""), ("tls-alpn-01", "not a name"),
    ("dns-01", "mail.example.com")])
def test_challenge_keys_are_checked_per_type(kind: str, key: str) -> None:
    """Only the known challenge types, each with its own key rule (a token, a DNS name)."""
    with pytest.raises(ChallengeError):
        check_challenge(kind, key)


def test_tls_alpn01_is_keyed_by_dns_name() -> None:
    """TLS-ALPN-01 answers will be stored per validated name."""
    check_challenge("tls-alpn-01", "mail.example.com")
    assert set(CHALLENGE_KEYS) == {"http-01", "tls-alpn-01"}
