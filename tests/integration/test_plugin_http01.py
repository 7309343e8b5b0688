"""The authenticator's challenge work: answer files (names, modes), the
fallback listener, the local self-check, and perform/cleanup against real
sockets on 127.0.0.1."""

from __future__ import annotations

import errno
import http.client
import os
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from acme import challenges
from certbot import errors

from certbot_elemta._internal import http01, webserver
from certbot_elemta._internal.http01 import HTTP01Responder
from certbot_elemta._internal.responder import is_listening
from elemta_smtp.cache import challenges as answers
from elemta_smtp.cache import layout
from elemta_smtp.errors import ChallengeError
from elemta_smtp.units import Address
from tests.plugin_support import achall
from tests.support import free_port, http_get


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def challenge_dir(cache_dir: Path) -> Path:
    layout.ensure_layout(cache_dir)
    return layout.challenge_dir(cache_dir)


# --- answer files -----------------------------------------------------------------

@pytest.mark.parametrize("token", [
    pytest.param("../../etc/passwd", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("tok.en", id="dot"),
    pytest.param("", id="empty"),
    pytest.param("a" * 257, id="too-long"),
    pytest.param("tok\n", id="newline"),
    pytest.param("tök", id="non-ascii"),
    pytest.param("a=", id="padding"),
])
def test_bad_token_is_refused_with_a_sentence(challenge_dir: Path, token: str) -> None:
    """A token outside the base64url alphabet never becomes a file name."""
    with pytest.raises(ChallengeError, match="not base64url"):
        answers.write_answer(challenge_dir, token, "x.y")
    assert list(challenge_dir.iterdir()) == []


def test_answer_is_world_readable_under_any_umask(tmp_path: Path) -> None:
    """Answers are 0644 and new folders 0755 even when certbot runs with umask 077."""
    challenge_dir = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    old = os.umask(0o077)
    try:
        path = answers.write_answer(challenge_dir, "tok_-9", "tok_-9.thumb")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"tok_-9.thumb"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for folder in (challenge_dir, challenge_dir.parent, challenge_dir.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_remove_answer_twice_is_fine(challenge_dir: Path) -> None:
    """Cleanup may run after a partial perform: removing a missing answer is no error."""
    path = answers.write_answer(challenge_dir, "tok", "tok.t")
    answers.remove_answer(path)
    answers.remove_answer(path)
    assert not path.exists()


# --- the fallback listener ---------------------------------------------------------

@pytest.fixture
def server(challenge_dir: Path) -> Iterator[webserver.ChallengeServer]:
    srv = webserver.ChallengeServer(Address("127.0.0.1", 0), challenge_dir)
    yield srv
    srv.stop()


def test_fallback_server_serves_answer_as_text_plain(challenge_dir: Path,
                                                     server: webserver.ChallengeServer) -> None:
    """The plugin's own listener answers a stored token 200 text/plain."""
    answers.write_answer(challenge_dir, "tok", "tok.thumb")
    assert http_get(server.port, "/.well-known/acme-challenge/tok") == (200, "text/plain", b"tok.thumb")
    status, _, body = http_get(server.port, "/.well-known/acme-challenge/tok", "HEAD")
    assert (status, body) == (200, b"")


@pytest.mark.parametrize("path", [
    pytest.param("/", id="root"),
    pytest.param("/.well-known/acme-challenge/", id="listing"),
    pytest.param("/.well-known/acme-challenge/../../../cache/live", id="dotdot"),
    pytest.param("/.well-known/acme-challenge/%2e%2e%2fsecret", id="encoded-dotdot"),
    pytest.param("/.well-known/acme-challenge/secret.txt", id="dot-in-token"),
    pytest.param("/.well-known/acme-challenge/tok/x", id="extra-segment"),
    pytest.param("/x/.well-known/acme-challenge/tok", id="nested"),
])
def test_fallback_server_serves_nothing_else(challenge_dir: Path, server: webserver.ChallengeServer,
                                             path: str) -> None:
    """The plugin's own listener 404s everything but a valid token, like the daemon."""
    answers.write_answer(challenge_dir, "tok", "tok.thumb")
    (challenge_dir / "secret.txt").write_bytes(b"SECRET")
    status, _, body = http_get(server.port, path)
    assert status == 404
    assert b"SECRET" not in body and b"thumb" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_fallback_server_refuses_other_methods_like_the_daemon(
        challenge_dir: Path, server: webserver.ChallengeServer, method: str) -> None:
    """Only GET and HEAD are answered; any other method is 405 with Allow, as from the daemon."""
    answers.write_answer(challenge_dir, "tok", "tok.thumb")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, "/.well-known/acme-challenge/tok")
        response = conn.getresponse()
        status, allow, body = response.status, response.getheader("Allow"), response.read()
    finally:
        conn.close()
    assert (status, allow) == (405, "GET, HEAD")
    assert b"thumb" not in body


def test_port_in_use_is_a_sentence(challenge_dir: Path) -> None:
    """A port another program holds gives a PluginError saying so and what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.PluginError,
                           match=f"127.0.0.1:{port}: the port is already in use by another program"):
            webserver.ChallengeServer(Address("127.0.0.1", port), challenge_dir)


@pytest.mark.parametrize(("code", "words", "fix"), [
    pytest.param(errno.EACCES, "need root or CAP_NET_BIND_SERVICE", "Run certbot as root",
                 id="EACCES"),
    pytest.param(errno.EADDRINUSE, "already in use by another program", "Stop that program",
                 id="EADDRINUSE"),
    pytest.param(errno.EADDRNOTAVAIL, "that IP address is not on this host", "Fix [tls.",
                 id="EADDRNOTAVAIL"),
    pytest.param(errno.ENOBUFS, "No buffer space", "", id="other"),
])
def test_bind_error_messages(code: int, words: str, fix: str) -> None:
    """Each bind failure is worded as the daemon words it (units.listen_failure), naming the
    address, plus what to do about it when running certbot."""
    message = webserver.bind_error_message(OSError(code, os.strerror(code)), Address("", 80))
    assert message.startswith("Cannot listen for the HTTP-01 challenge on :80: ")
    assert words in message and fix in message


# --- perform / cleanup --------------------------------------------------------------

def serving(responder: HTTP01Responder) -> bool:
    return responder.server is not None


def test_perform_serves_itself_when_nothing_listens(cache_dir: Path) -> None:
    """With no daemon on http_addr, perform serves the answer until cleanup, then stops."""
    port = free_port()
    responder = HTTP01Responder(cache_dir, Address("127.0.0.1", port))
    a = achall()
    [response] = responder.perform([a])
    _, validation = a.response_and_validation()
    token = a.chall.encode("token")
    assert isinstance(response, challenges.HTTP01Response)
    assert serving(responder)
    assert http_get(port, f"/.well-known/acme-challenge/{token}")[::2] == (200, validation.encode())
    responder.cleanup([a])
    assert responder.server is None
    assert not (layout.challenge_dir(cache_dir) / token).exists()
    assert not is_listening(Address("127.0.0.1", port))


def test_perform_uses_the_daemon_when_it_listens(cache_dir: Path) -> None:
    """When an elemta listener already serves the webroot, perform starts no server of its own."""
    layout.ensure_layout(cache_dir)
    daemon = webserver.ChallengeServer(Address("127.0.0.1", 0), layout.challenge_dir(cache_dir))
    try:
        responder = HTTP01Responder(cache_dir, Address("127.0.0.1", daemon.port))
        a = achall()
        responder.perform([a])
        assert responder.server is None
        responder.cleanup([a])
        assert list(layout.challenge_dir(cache_dir).iterdir()) == []
    finally:
        daemon.stop()


class _Foreign(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_foreign_web_server_on_http_addr_is_reported(cache_dir: Path) -> None:
    """Another web server on http_addr is named in a PluginError before the CA is asked."""
    foreign = HTTPServer(("127.0.0.1", 0), _Foreign)
    thread = threading.Thread(target=foreign.serve_forever, daemon=True)
    thread.start()
    try:
        responder = HTTP01Responder(cache_dir, Address("127.0.0.1", foreign.server_address[1]))
        a = achall()
        with pytest.raises(errors.PluginError, match=r"does not serve elemta's HTTP-01 answers.*HTTP 404"):
            responder.perform([a])
        responder.cleanup([a])
        assert list(layout.challenge_dir(cache_dir).iterdir()) == []
    finally:
        foreign.shutdown()
        foreign.server_close()


def test_no_http_addr_only_writes(cache_dir: Path) -> None:
    """With http_addr empty the answers are written (for another server) and nothing listens."""
    responder = HTTP01Responder(cache_dir, None)
    a = achall()
    responder.perform([a])
    token = a.chall.encode("token")
    assert (layout.challenge_dir(cache_dir) / token).is_file()
    assert responder.server is None
    responder.cleanup([a])
    assert not (layout.challenge_dir(cache_dir) / token).exists()


def test_server_stops_only_after_last_challenge(cache_dir: Path) -> None:
    """Cleanup of one of two challenges keeps serving the other."""
    port = free_port()
    responder = HTTP01Responder(cache_dir, Address("127.0.0.1", port))
    a, b = achall(b"first-token-aaaaaaaa"), achall(b"other-token-bbbbbbbb", "smtp.example.com")
    responder.perform([a, b])
    responder.cleanup([a])
    assert serving(responder)
    assert http_get(port, f"/.well-known/acme-challenge/{b.chall.encode('token')}")[0] == 200
    responder.cleanup([b])
    assert responder.server is None


@pytest.mark.parametrize(("result", "expected"), [
    pytest.param((200, b"tok.t\n"), None, id="ok-with-newline"),
    pytest.param((200, b"other"), "gave HTTP 200", id="wrong-body"),
    pytest.param((404, b""), "gave HTTP 404", id="not-found"),
    pytest.param(ConnectionRefusedError(111, "Connection refused"), "could not be fetched", id="refused"),
])
def test_self_check_problem(result: tuple[int, bytes] | OSError, expected: str | None) -> None:
    """The self-check verdict is a sentence naming the address, or None when it passed."""
    problem = http01.self_check_problem(Address("", 80), "http://d/x", "tok.t", result)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and ":80" in problem
