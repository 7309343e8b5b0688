"""The HTTP-01 rules of the cache contract as pure functions (cache/challenges.py): which
request gets which status, headers and body, for the daemon's site and the plugin's
listener alike; and where answers are written, with which modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from elemta_smtp.cache.challenges import (
    Answer,
    answer_request,
    remove_answer,
    token_of,
    write_answer,
)
from elemta_smtp.errors import ChallengeError

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
STORED = {TOKEN: b"key.authorization"}


def answer(method: str, target: str, version: str = "HTTP/1.1",
           hosts: tuple[str, ...] = ("mail.example.com",)) -> Answer:
    return answer_request(method, target, version, hosts, STORED.get)


@pytest.mark.parametrize(("target", "expected"), [
    pytest.param(f"/.well-known/acme-challenge/{TOKEN}", TOKEN, id="token"),
    pytest.param(f"/.well-known/acme-challenge/{TOKEN}?x=1", TOKEN, id="query-ignored"),
    pytest.param("/.well-known/acme-challenge/", None, id="empty"),
    pytest.param("/.well-known/acme-challenge/a%41", None, id="escaped"),
    pytest.param("/.well-known/acme-challenge/a/b", None, id="extra-segment"),
    pytest.param("/.well-known/ACME-challenge/abc", None, id="case"),
    pytest.param("/.well-known/acme-challenge/abc\n", None, id="trailing-newline"),
    pytest.param(f"http://mail.example.com/.well-known/acme-challenge/{TOKEN}", None,
                 id="absolute-form"),
    pytest.param(f"//.well-known/acme-challenge/{TOKEN}", None, id="double-slash"),
])
def test_token_of(target: str, expected: str | None) -> None:
    """Exactly /.well-known/acme-challenge/<base64url token> names a token; nothing is decoded."""
    assert token_of(target) == expected


@pytest.mark.parametrize(("method", "target", "version", "hosts", "status", "body"), [
    pytest.param("GET", f"/.well-known/acme-challenge/{TOKEN}", "HTTP/1.1", ("a",), 200,
                 b"key.authorization", id="served"),
    pytest.param("HEAD", f"/.well-known/acme-challenge/{TOKEN}", "HTTP/1.1", ("a",), 200, b"",
                 id="head-no-body"),
    pytest.param("GET", "/.well-known/acme-challenge/nosuch", "HTTP/1.1", ("a",), 404,
                 b"not found\n", id="unknown-token"),
    pytest.param("GET", "/", "HTTP/1.0", (), 404, b"not found\n", id="http10-no-host"),
    pytest.param("POST", f"/.well-known/acme-challenge/{TOKEN}", "HTTP/1.1", ("a",), 405,
                 b"method not allowed\n", id="post"),
    pytest.param("GET", f"/.well-known/acme-challenge/{TOKEN}", "HTTP/1.1", (), 400,
                 b"bad request: HTTP/1.1 request without a Host header\n", id="no-host"),
    pytest.param("POST", "/", "HTTP/1.1", ("a", "b"), 400,
                 b"bad request: more than one Host header\n", id="two-hosts-before-method"),
])
def test_answer_request_table(method: str, target: str, version: str,  # noqa: PLR0917
                              hosts: tuple[str, ...], status: int, body: bytes) -> None:
    """Host rule first (400), then the method (405), then the token (200 or 404)."""
    result = answer(method, target, version, hosts)
    assert (result.status, result.body) == (status, body)
    assert result.close is (status == 400)


def test_answer_headers() -> None:
    """An answer is text/plain, not cached, with the GET length also on HEAD; a refused
    method names the allowed ones; only a GET that sent the answer counts as served."""
    got = answer("GET", f"/.well-known/acme-challenge/{TOKEN}")
    head = answer("HEAD", f"/.well-known/acme-challenge/{TOKEN}")
    assert dict(got.headers) == {"Content-Type": "text/plain", "Content-Length": "17",
                                 "Cache-Control": "no-store"}
    assert dict(head.headers) == dict(got.headers)
    assert (got.served, head.served) == (TOKEN, None)
    assert dict(answer("PUT", "/").headers)["Allow"] == "GET, HEAD"
    assert dict(answer("GET", "/x").headers)["Content-Type"] == "text/plain; charset=utf-8"


def test_unread_token_is_never_read() -> None:
    """A target that is no token never reaches the reader (no file name from a request)."""
    asked: list[str] = []

    def read(token: str) -> bytes | None:
        asked.append(token)
        return None

    answer_request("GET", "/.well-known/acme-challenge/../../etc/passwd", "HTTP/1.1", ["a"], read)
    assert asked == []


def test_answer_files_are_public_whatever_the_umask(tmp_path: Path) -> None:
    """Answers are 0644 and the folders made for them 0755 even under umask 077; a second
    removal is fine."""
    folder = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    old = os.umask(0o077)
    try:
        path = write_answer(folder, "tok", b"tok.t")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"tok.t"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    remove_answer(path)
    remove_answer(path)
    assert not path.exists()


def test_bad_token_is_a_challenge_error(tmp_path: Path) -> None:
    """A token that is not base64url is refused with a sentence, and nothing is written."""
    with pytest.raises(ChallengeError, match="not base64url"):
        write_answer(tmp_path, "../x", "v")
    assert list(tmp_path.iterdir()) == []
