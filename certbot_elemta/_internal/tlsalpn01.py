"""TLS-ALPN-01 (RFC 8737) for the ``elemta`` authenticator.

certbot 5's ``acme`` package has no TLS-ALPN-01 challenge class any more: the one below is
registered with ``acme``'s challenge registry when this module is imported, which happens
when certbot loads its plugins, before it parses ``--preferred-challenges`` or an
authorization. ``perform`` writes each key authorization into
``<cache_dir>/tls-alpn-01/<name>`` (the cache contract); the running daemon answers from
there on ``[tls.letsencrypt] https_addr``. When nothing listens there, an ``AlpnServer``
answers from certbot until ``cleanup``. Before answering the CA, one local handshake as
the CA would make it (SNI, ALPN acme-tls/1) checks the certificate presented.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from acme import challenges
from certbot import achallenges, errors
from cryptography import x509
from josepy.jwk import JWK
from OpenSSL import SSL

from certbot_elemta._internal.responder import Responder
from certbot_elemta._internal.webserver import bind_error_message
from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE,
    AnswerError,
    read_alpn_answer,
    write_alpn_answer,
)
from elemta_smtp.cache.redis_store import RedisStore
from elemta_smtp.cache.tlsalpn import (
    ValidationCache,
    alpn_select,
    fetch_validation,
    validates,
    validation_certificate,
)
from elemta_smtp.errors import ChallengeError
from elemta_smtp.units import NO_IPV6, Address, bind_hosts

logger = logging.getLogger(__name__)

TYP = "tls-alpn-01"


def _register() -> type[challenges.KeyAuthorizationChallenge]:
    """The TLS-ALPN-01 challenge class in ``acme``'s registry: ours, unless this ``acme``
    brings one of its own (older releases did)."""
    found: type[challenges.KeyAuthorizationChallenge] | None = challenges.Challenge.TYPES.get(TYP)
    if found is not None:
        return found

    @challenges.ChallengeResponse.register
    class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
        """ACME tls-alpn-01 challenge response (its payload is ``{}``, as for http-01)."""

        typ = TYP

    @challenges.Challenge.register
    class TLSALPN01(challenges.KeyAuthorizationChallenge):
        """ACME tls-alpn-01 challenge (RFC 8737)."""

        response_cls = TLSALPN01Response
        typ = TYP

        def validation(self, account_key: JWK, **unused_kwargs: object) -> str:
            """The key authorization: its SHA-256 goes into the validation certificate."""
            key_authorization: str = self.key_authorization(account_key)
            return key_authorization

    return TLSALPN01


#: The challenge class certbot matches with ``get_chall_pref``.
TLSALPN01 = _register()


def key_authorization(achall: achallenges.AnnotatedChallenge) -> str:
    """The key authorization of ``achall`` (whichever class acme made it of)."""
    value: str = achall.chall.key_authorization(achall.account_key)
    return value


def _bind(address: Address) -> socket.socket:
    """Bind like the daemon (``units.bind_hosts``)."""
    hosts = bind_hosts(address)
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and not address.host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, address.port))
            sock.listen(64)
            return sock
        except OSError as exc:
            sock.close()
            if host != hosts[-1] and exc.errno in NO_IPV6:
                continue
            raise
    raise AssertionError("bind_hosts() is never empty")


class AlpnServer:
    """A TLS listener on ``address`` answering TLS-ALPN-01 from ``alpn_dir`` in threads until
    ``stop``: acme-tls/1 for a pending name gets the validation certificate, anything else a
    failed handshake. At most ``max_connections`` at once, each cut ``deadline`` seconds
    after it was accepted."""

    def __init__(self, address: Address, alpn_dir: Path, deadline: float = REQUEST_DEADLINE,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.address = address
        self._alpn_dir = alpn_dir
        self._deadline = deadline
        self._max = max_connections
        self._validations = ValidationCache()
        # OpenSSL chooses the cipher (which needs a certificate) before asking for ALPN: a
        # stand-in, replaced on the connection by the validation certificate
        self._stand_in = validation_certificate("tls-alpn-01.elemta.invalid", b"")
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        try:
            self._sock = _bind(address)
        except OSError as exc:
            raise errors.PluginError(bind_error_message(exc, address, "TLS-ALPN-01", "https_addr",
                                                         443)) from exc
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, name=f"elemta-tlsalpn-{address.port}",
                                        daemon=True)
        self._thread.start()
        logger.info("No elemta daemon listens on %s: answering the TLS-ALPN-01 challenge from "
                    "certbot for the duration of the challenge", address)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            with self._lock:
                full = len(self._open) >= self._max
                if not full:
                    self._open.add(conn)
            if full:
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read(self, name: str | None) -> bytes | None:
        try:
            return read_alpn_answer(self._alpn_dir, name)
        except AnswerError as exc:
            logger.warning("Cannot read the TLS-ALPN-01 answer: %s", exc.strerror)
            return None

    def _context(self) -> SSL.Context:
        """A context per connection: pyOpenSSL keeps a callback's exception on the context,
        which threads must not share."""
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate(self._stand_in.certificate)  # type: ignore[arg-type, unused-ignore]
        context.use_privatekey(self._stand_in.key)  # type: ignore[arg-type, unused-ignore]
        cache = self._validations

        def select(conn: SSL.Connection, offered: list[bytes]) -> bytes:
            return alpn_select(conn, offered, self._read, cache, http=False)

        context.set_alpn_select_callback(select)
        return context

    def _handle(self, sock: socket.socket) -> None:
        timer = threading.Timer(self._deadline, _cut, (sock,))
        timer.daemon = True
        timer.start()
        try:
            sock.settimeout(None)
            tls = SSL.Connection(self._context(), sock)
            tls.set_accept_state()
            tls.do_handshake()
            raw = tls.get_servername()
            logger.info("Answered the TLS-ALPN-01 challenge for %s to %s",
                        raw.decode("ascii", "replace") if raw else "?", _peer(sock))
            with contextlib.suppress(SSL.Error, OSError):
                tls.shutdown()
        except (SSL.Error, OSError) as exc:
            logger.debug("tls-alpn-01 server: handshake with %s failed: %s", _peer(sock), exc)
        finally:
            timer.cancel()
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


ServerFactory = Callable[[Address, Path], AlpnServer]


def self_check_problem(address: Address, name: str, key_authz: str,
                       result: x509.Certificate | OSError) -> str | None:
    """What is wrong with a local TLS-ALPN-01 self-check (the certificate presented, or the
    error), as a sentence; None when it passed."""
    if isinstance(result, OSError):
        return (f"The TLS-ALPN-01 answer for {name} could not be checked on {address}: {result}. "
                "Check that the elemta daemon's HTTPS listener is up ([tls.letsencrypt] "
                "https_addr) and runs with the same elemta.toml (cache_dir), and try again.")
    problem = validates(result, name, key_authz.encode("ascii"))
    if problem is None:
        return None
    return (f"Something listens on {address} but it does not answer elemta's TLS-ALPN-01 "
            f"challenge for {name}: {problem}. Another program may be using that port, or the "
            "daemon runs with a different elemta.toml (cache_dir). Stop the other program or "
            "pass the daemon's config with --elemta-config, then try again.")


class TLSALPN01Responder(Responder[AlpnServer]):
    """Writes, serves (when needed) and removes TLS-ALPN-01 answers for one certbot run."""

    kind = "tls-alpn-01"

    def __init__(self, cache_dir: Path, https_addr: Address | None,
                 server_factory: ServerFactory = AlpnServer,
                 shared: RedisStore | None = None) -> None:
        super().__init__(cache_dir, server_factory, shared)
        self.https_addr = https_addr
        self.alpn_dir = layout.tls_alpn_dir(cache_dir)

    def perform(self, achalls: Sequence[achallenges.AnnotatedChallenge]
                ) -> list[challenges.ChallengeResponse]:
        """Write every answer, make sure it is served, check it; return the responses."""
        if self.https_addr is None:
            raise errors.PluginError(
                "TLS-ALPN-01 needs elemta's HTTPS listener, but [tls.letsencrypt] https_addr is "
                "empty: set it (default \":443\", port 443 as seen from the internet) or use "
                "--preferred-challenges http-01.")
        self._prepare_cache()
        responses: list[challenges.ChallengeResponse] = []
        for achall in achalls:
            name = achall.identifier.value
            try:
                self._written[achall] = write_alpn_answer(self.alpn_dir, name, key_authorization(achall))
            except ChallengeError as exc:
                raise errors.PluginError(str(exc)) from exc
            self.shared.share(self.kind, name, key_authorization(achall))
            responses.append(achall.response(achall.account_key))
            logger.debug("Wrote TLS-ALPN-01 answer for %s to %s", name, self._written[achall])
        self._serve(self.https_addr, self.alpn_dir)
        for achall in achalls:
            self._self_check(achall)
        return responses

    def _self_check(self, achall: achallenges.AnnotatedChallenge) -> None:
        assert self.https_addr is not None
        name = achall.identifier.value
        result: x509.Certificate | OSError
        try:
            result = fetch_validation(self.https_addr.connect_host, self.https_addr.port, name)
        except OSError as exc:
            result = exc
        problem = self_check_problem(self.https_addr, name, key_authorization(achall), result)
        if problem:
            raise errors.PluginError(problem)
