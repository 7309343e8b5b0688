"""The plugin's own HTTP-01 listener, used only while no elemta daemon listens
on ``[tls.letsencrypt] http_addr`` (first issuance before the daemon ever ran,
or the daemon is stopped). It serves the same challenge directory as the daemon's
site and answers every request as ``elemta_smtp.cache.challenges.answer_request``
decides (the daemon's rules, written once); each connection is closed
``REQUEST_DEADLINE`` seconds after it was accepted, at most ``MAX_CONNECTIONS``
open at once (more are closed at once)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from certbot import errors

from elemta_smtp.cache.challenges import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE,
    AnswerError,
    answer_request,
    read_answer,
)
from elemta_smtp.units import NO_IPV6, Address, bind_hosts, listen_failure

logger = logging.getLogger(__name__)

def bind_error_message(error: OSError, address: Address, challenge: str = "HTTP-01",
                       key: str = "http_addr", port: int = 80) -> str:
    """One sentence a user can act on for a failed bind of the plugin's own listener for
    ``challenge`` on ``[tls.letsencrypt] key`` (the CA's ``port``) (cf. certbot's
    standalone): ``listen_failure`` says why, then what to do about it, by errno."""
    fixes = {
        errno.EACCES: "Run certbot as root, or start the elemta daemon so it answers the "
                      "challenge.",
        errno.EADDRINUSE: (f"It is not elemta. Stop that program, or set [tls.letsencrypt] "
                           f"{key} to a free port that port {port} is forwarded to, then try "
                           "again."),
        errno.EADDRNOTAVAIL: f"Fix [tls.letsencrypt] {key}.",
    }
    text = listen_failure(f"the {challenge} challenge", address, error)
    fix = fixes.get(error.errno or 0)
    return text[:1].upper() + text[1:] + "." + (f" {fix}" if fix else "")


class _Handler(BaseHTTPRequestHandler):
    challenge_dir: ClassVar[Path]
    server_version = "elemta-certbot"
    sys_version = ""

    def handle_one_request(self) -> None:
        """Read one request and answer it, whatever its method (``answer_request`` decides;
        the standard handler would answer unknown methods itself)."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._answer()
            self.wfile.flush()
        except (TimeoutError, OSError):
            self.close_connection = True

    def _read(self, token: str) -> bytes | None:
        try:
            return read_answer(self.challenge_dir, token)
        except AnswerError as exc:
            logger.warning("Cannot read the HTTP-01 answer: %s", exc.strerror)
            return None

    def _answer(self) -> None:
        answer = answer_request(self.command, self.path, self.request_version,
                                self.headers.get_all("Host") or [], self._read)
        if answer.close:
            self.close_connection = True
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)
        if answer.served is not None:
            logger.info("Served HTTP-01 challenge %s to %s", answer.served, self.client_address[0])

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http-01 server: " + format, *args)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them (more are closed at
    once, unread), each connection cut ``deadline`` seconds after it was accepted."""

    daemon_threads = True
    allow_reuse_address = True
    deadline = REQUEST_DEADLINE
    max_connections = MAX_CONNECTIONS

    def __init__(self, server_address: tuple[str, int], handler: type[_Handler]) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[object, threading.Timer] = {}  # per open connection
        super().__init__(server_address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # ":80" means every address: take IPv4 too on the same socket.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def verify_request(self, request: object, client_address: object) -> bool:
        """Admit a connection while fewer than ``max_connections`` are open, and start its
        deadline; a refused one is closed by ``shutdown_request`` at once."""
        with self._lock:
            if len(self._deadlines) >= self.max_connections:
                return False
            timer = threading.Timer(self.deadline, _cut, (request,))
            timer.daemon = True
            self._deadlines[request] = timer
        timer.start()
        return True

    def shutdown_request(self, request: object) -> None:
        with self._lock:
            timer = self._deadlines.pop(request, None)
        if timer is not None:
            timer.cancel()
        super().shutdown_request(request)  # type: ignore[arg-type]


def _cut(request: object) -> None:
    """The deadline passed: end both directions, so the handler's read returns at once."""
    if isinstance(request, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            request.shutdown(socket.SHUT_RDWR)


def _server(family: socket.AddressFamily, host: str, port: int, handler: type[_Handler]) -> _Server:
    server_class = type("_FamilyServer", (_Server,), {"address_family": family})
    server: _Server = server_class((host, port), handler)
    return server


def _bind(address: Address, handler: type[_Handler]) -> _Server:
    """Bind like the daemon (``units.bind_hosts``): ``""`` is every address (dual-stack
    when the machine has IPv6, else IPv4)."""
    hosts = bind_hosts(address)
    for host in hosts[:-1]:
        try:
            return _server(socket.AF_INET6 if ":" in host else socket.AF_INET, host,
                           address.port, handler)
        except OSError as exc:
            if exc.errno not in NO_IPV6:
                raise
    host = hosts[-1]
    return _server(socket.AF_INET6 if ":" in host else socket.AF_INET, host, address.port, handler)


class ChallengeServer:
    """A listener on ``address`` serving ``challenge_dir`` from a thread until ``stop``."""

    def __init__(self, address: Address, challenge_dir: Path,
                 deadline: float = REQUEST_DEADLINE, max_connections: int = MAX_CONNECTIONS) -> None:
        self.address = address
        handler = type("Handler", (_Handler,), {"challenge_dir": challenge_dir})
        try:
            self._server = _bind(address, handler)
        except OSError as exc:
            raise errors.PluginError(bind_error_message(exc, address)) from exc
        self._server.deadline = deadline
        self._server.max_connections = max_connections
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"elemta-http01-{address.port}", daemon=True)
        self._thread.start()
        logger.info("No elemta daemon listens on %s: serving the HTTP-01 challenge from "
                    "certbot for the duration of the challenge", address)

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
