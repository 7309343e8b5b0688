"""The daemon's HTTP-01 site, driven through real HTTP parsing over a
StringTransport with a task.Clock (no sockets, no reactor): what it serves, and its
bounds (deadline, connection cap, Host rule)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from elemta_smtp.acme.http01 import ChallengeSite, http01_site
from elemta_smtp.cache.challenges import REQUEST_DEADLINE
from tests.fakes import http01_request

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = TOKEN.encode() + b".thumbprint_-abc"


@pytest.fixture
def webroot(tmp_path: Path) -> Path:
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_bytes(ANSWER)
    return tmp_path / "webroot"


def get(webroot: Path, path: str, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    raw = f"{method} {path} HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n"
    if method == "POST":
        raw += "Content-Length: 0\r\n"
    return http01_request(webroot, (raw + "\r\n").encode())


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def test_serves_key_authorization_as_text_plain(webroot: Path) -> None:
    """A stored token is answered 200 with its key authorization as text/plain."""
    status, headers, body = get(webroot, f"/.well-known/acme-challenge/{TOKEN}")
    assert (status, body) == (200, ANSWER)
    assert headers[b"content-type"] == b"text/plain"


def test_head_has_headers_and_no_body(webroot: Path) -> None:
    """HEAD gets the GET status and length but no body."""
    status, headers, body = get(webroot, f"/.well-known/acme-challenge/{TOKEN}", "HEAD")
    assert (status, body) == (200, b"")
    assert headers[b"content-length"] == str(len(ANSWER)).encode()


def test_unknown_token_is_404(webroot: Path) -> None:
    """A well-formed token with no file behind it is 404."""
    status, _, body = get(webroot, "/.well-known/acme-challenge/nosuchtoken")
    assert status == 404
    assert ANSWER not in body


@pytest.mark.parametrize("path", [
    pytest.param("/", id="root"),
    pytest.param("/.well-known/", id="well-known-listing"),
    pytest.param("/.well-known/acme-challenge/", id="challenge-dir-listing"),
    pytest.param("/.well-known/acme-challenge", id="challenge-dir-no-slash"),
    pytest.param(f"/other/{TOKEN}", id="other-prefix"),
    pytest.param(f"/x/.well-known/acme-challenge/{TOKEN}", id="nested-prefix"),
    pytest.param(f"/.well-known/acme-challenge/{TOKEN}/", id="trailing-slash"),
    pytest.param(f"/.well-known/acme-challenge/{TOKEN}/x", id="extra-segment"),
    pytest.param("/.well-known/acme-challenge/../../secret", id="dotdot"),
    pytest.param("/.well-known/acme-challenge/%2e%2e%2f%2e%2e%2fsecret", id="encoded-dotdot"),
    pytest.param("/.well-known/acme-challenge/..%2F..%2Fsecret", id="encoded-slash"),
    pytest.param("/.well-known/acme-challenge/secret.txt", id="dot-in-token"),
    pytest.param("/.well-known/acme-challenge/a%00b", id="nul-in-token"),
    pytest.param("/.well-known/acme-challenge/" + "a" * 257, id="token-too-long"),
    pytest.param("/.well-known/acme-challenge/t%20k", id="space-in-token"),
])
def test_everything_else_is_404(webroot: Path, path: str) -> None:
    """Only .well-known/acme-challenge/<base64url token> is served; no listing, no traversal."""
    (webroot.parent / "secret").write_bytes(b"TOP SECRET")
    (webroot / ".well-known" / "acme-challenge" / "secret.txt").write_bytes(b"TOP SECRET")
    status, _, body = get(webroot, path)
    assert status == 404
    assert b"SECRET" not in body and ANSWER not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_only_get_and_head(webroot: Path, method: str) -> None:
    """Other methods are refused with 405 and never see the answer."""
    status, _, body = get(webroot, f"/.well-known/acme-challenge/{TOKEN}", method)
    assert status == 405
    assert ANSWER not in body


def test_symlinked_token_is_not_followed(webroot: Path) -> None:
    """A token that is a symlink (e.g. to a private key) is 404."""
    (webroot.parent / "key.pem").write_bytes(b"PRIVATE KEY")
    os.symlink(webroot.parent / "key.pem", webroot / ".well-known" / "acme-challenge" / "link")
    status, _, body = get(webroot, "/.well-known/acme-challenge/link")
    assert status == 404
    assert b"PRIVATE" not in body


def test_reads_tokens_at_request_time(webroot: Path) -> None:
    """Tokens written or removed after the site starts are seen at once."""
    site_dir = webroot / ".well-known" / "acme-challenge"
    assert get(webroot, "/.well-known/acme-challenge/later")[0] == 404
    (site_dir / "later").write_bytes(b"later.tp")
    assert get(webroot, "/.well-known/acme-challenge/later")[:3:2] == (200, b"later.tp")
    (site_dir / "later").unlink()
    assert get(webroot, "/.well-known/acme-challenge/later")[0] == 404


def test_missing_webroot_is_404(tmp_path: Path) -> None:
    """Before the plugin ever created the webroot, requests are 404, not errors."""
    assert get(tmp_path / "nope", f"/.well-known/acme-challenge/{TOKEN}")[0] == 404


def test_one_log_line_per_challenge_served(webroot: Path, events: list[LogEvent]) -> None:
    """A served challenge logs exactly one line naming token and client; a 404 logs nothing."""
    get(webroot, "/.well-known/acme-challenge/nosuchtoken")
    get(webroot, "/favicon.ico")
    assert ours(events) == []
    get(webroot, f"/.well-known/acme-challenge/{TOKEN}")
    served = ours(events)
    assert len(served) == 1
    assert served[0]["token"] == TOKEN and served[0]["client"] == "192.0.2.7"


def ours(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("log_namespace") == "elemta_smtp.acme.http01"]


# --- bounds: deadline, connection cap, Host -------------------------------------------------


class Open:
    """A connection to a site, its clock and its transport, driven by hand."""

    def __init__(self, site: ChallengeSite, clock: Clock, host: str = "192.0.2.7") -> None:
        peer = IPv4Address("TCP", host, 40000)
        self.protocol: Any = site.buildProtocol(peer)
        self.clock = clock
        self.transport: Any = StringTransport(peerAddress=peer)  # type: ignore[no-untyped-call]
        if self.protocol is not None:
            self.protocol.makeConnection(self.transport)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]


def bounded_site(webroot: Path, cap: int = 3) -> tuple[ChallengeSite, Clock]:
    clock = Clock()
    site = http01_site(webroot, reactor=cast(IReactorTime, clock), max_connections=lambda: cap)
    assert isinstance(site, ChallengeSite)
    return site, clock


def test_trickled_request_is_aborted_at_the_deadline(webroot: Path) -> None:
    """A byte a second restarts no timer: the connection is aborted REQUEST_DEADLINE seconds
    after it was opened, with nothing written back."""
    site, clock = bounded_site(webroot)
    conn = Open(site, clock)
    assert conn.protocol is not None
    raw = b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 50
    seconds = int(REQUEST_DEADLINE)
    for second in range(seconds):  # a byte at 0 s, 1 s, ... 9 s
        conn.protocol.dataReceived(raw[second:second + 1])
        clock.advance(1 if second < seconds - 1 else 0.99)
    assert not conn.transport.disconnected
    clock.advance(0.02)
    assert conn.transport.disconnected  # aborted
    assert conn.transport.value() == b""


def test_deadline_is_cancelled_when_the_connection_closes(webroot: Path) -> None:
    """A connection that ended leaves no timer behind."""
    site, clock = bounded_site(webroot)
    conn = Open(site, clock)
    assert conn.protocol is not None
    conn.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    conn.close()
    assert clock.getDelayedCalls() == []
    assert site.open == 0


def test_connections_over_the_cap_are_refused_and_logged_once(
        webroot: Path, events: list[LogEvent]) -> None:
    """With max_connections() = 3, a 4th and 5th connection get no protocol (Twisted closes the
    socket at once); one warning for the run of refusals, one line when a slot is used again."""
    site, clock = bounded_site(webroot, cap=3)
    held = [Open(site, clock) for _ in range(3)]
    assert all(c.protocol is not None for c in held)
    assert Open(site, clock).protocol is None
    assert Open(site, clock).protocol is None
    held[0].close()
    assert Open(site, clock).protocol is not None
    texts = [formatEvent(e) for e in ours(events)]
    assert len(texts) == 2
    assert "full (3 connections open, at most 3)" in texts[0]
    assert "accepting again (2 connections refused meanwhile)" in texts[1]


def test_cap_is_asked_at_every_accept(webroot: Path) -> None:
    """The cap is a function (the daemon lowers it when descriptors run short): a lower value
    refuses the next connection even below the old cap."""
    clock = Clock()
    cap = [5]
    site = http01_site(webroot, reactor=cast(IReactorTime, clock), max_connections=lambda: cap[0])
    assert Open(cast(ChallengeSite, site), clock).protocol is not None
    cap[0] = 1
    assert Open(cast(ChallengeSite, site), clock).protocol is None


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param(b"GET /x HTTP/1.1\r\n\r\n", 400, id="1.1-no-host"),
    pytest.param(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="1.1-two-hosts"),
    pytest.param(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, id="1.1-post-no-host"),
    pytest.param(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 404, id="1.1-host"),
    pytest.param(b"GET /x HTTP/1.0\r\n\r\n", 404, id="1.0-no-host"),
])
def test_http11_needs_exactly_one_host(webroot: Path, raw: bytes, expected: int) -> None:
    """HTTP/1.1 without a Host header, or with two, is 400 (RFC 9112); HTTP/1.0 needs none."""
    status, headers, _ = http01_request(webroot, raw)
    assert status == expected
    if expected == 400:
        assert headers[b"connection"] == b"close"


def test_token_naming_a_folder_is_404_and_closes_its_descriptor(webroot: Path) -> None:
    """A folder where a token file should be is 404, and no descriptor is left open."""
    (webroot / ".well-known" / "acme-challenge" / "folder").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert get(webroot, "/.well-known/acme-challenge/folder")[0] == 404
    assert len(os.listdir("/proc/self/fd")) == before


def test_fifo_token_is_404_without_blocking(webroot: Path) -> None:
    """A FIFO named like a token is never read (no blocking open, no read): 404."""
    os.mkfifo(webroot / ".well-known" / "acme-challenge" / "pipe")
    assert get(webroot, "/.well-known/acme-challenge/pipe")[0] == 404
