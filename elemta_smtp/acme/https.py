"""The daemon's HTTPS listener (``[tls.letsencrypt] https_addr``, port 443): TLS-ALPN-01
answers and the MTA-STS policy, on elemta's own TLS layer (``net/tlslayer.py``).

Per connection: the servername callback picks elemta's certificate for the SNI name
(``ServerTLS.bundles_for``, so a SIGHUP reload reaches this listener too); the ALPN
callback (``cache.tlsalpn.alpn_select``) either puts the RFC 8737 validation certificate
on the connection for a name with a pending challenge (``<cache_dir>/tls-alpn-01/<name>``,
read at handshake time) and selects ``acme-tls/1`` -- the connection is then closed
without application data --, refuses the handshake (``acme-tls/1`` for a name without a
pending challenge, or without SNI), or goes on with HTTP/1.1, where
``GET /.well-known/mta-sts.txt`` on ``mta-sts.<policy domain>`` gets the policy
(``mtasts.answer_request``) and everything else 404. The limits are the HTTP-01
listener's: a deadline from accept, a connection cap, Twisted's header size limits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped, unused-ignore]

from elemta_smtp.acme import mtasts
from elemta_smtp.acme.http01 import ChallengeChannel, ChallengeSite, put_head
from elemta_smtp.cache.challenges import MAX_CONNECTIONS, REQUEST_DEADLINE, AnswerError, read_alpn_answer
from elemta_smtp.cache.tlsalpn import ACME_TLS_1, Refused, ValidationCache, alpn_select
from elemta_smtp.certs.bundle import CertificateBundle
from elemta_smtp.config import Config
from elemta_smtp.net.tlslayer import ServerTLSFactory
from elemta_smtp.tls.context import build_context

if TYPE_CHECKING:
    from prometheus_client import Counter

    from elemta_smtp.metrics import Metrics

log = Logger(namespace="elemta.https")

#: Contexts kept built, one per certificate served (a reload brings new certificates).
_CONTEXTS = 32


def https_wanted(config: Config) -> bool:
    """Does this configuration need the HTTPS listener? Only while something uses it:
    TLS-ALPN-01 challenges or MTA-STS, with TLS on and ``https_addr`` set."""
    le = config.tls.letsencrypt
    return (config.tls.enabled and le.https_addr is not None
            and (le.challenge == "tls-alpn-01" or config.mta_sts.enabled))


class CertificateSource(Protocol):
    """What the listener needs of ``ServerTLS``."""

    def bundles_for(self, server_name: str | None) -> tuple[CertificateBundle, ...]: ...


@implementer(IOpenSSLServerConnectionCreator)
class HTTPSConnections:
    """The connection creator of the HTTPS listener: SNI picks elemta's certificate, ALPN
    decides between TLS-ALPN-01 and HTTP/1.1."""

    def __init__(self, certificates: CertificateSource, alpn_dir: Path,
                 validations: ValidationCache | None = None) -> None:
        self._certificates = certificates
        self._alpn_dir = alpn_dir
        self._validations = validations or ValidationCache()
        self._contexts: dict[tuple[int, ...],
                             tuple[tuple[CertificateBundle, ...], SSL.Context]] = {}

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context(self._certificates.bundles_for(None)), None)

    def _context(self, bundles: tuple[CertificateBundle, ...]) -> SSL.Context:
        """The context serving ``bundles`` (one, or with key_type = "ecdsa+rsa" the
        certificate and its companion of the other key type, as on the SMTP ports)."""
        key = tuple(id(b) for b in bundles)
        found = self._contexts.get(key)
        if found is not None and all(a is b for a, b in zip(found[0], bundles, strict=True)):
            return found[1]
        if len(self._contexts) >= _CONTEXTS:
            self._contexts.clear()
        context = build_context(bundles[0], self._on_servername,
                                also=bundles[1] if len(bundles) > 1 else None)
        context.set_alpn_select_callback(self._on_alpn)
        self._contexts[key] = (bundles, context)
        return context

    def _on_servername(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        context = self._context(self._certificates.bundles_for(name))
        if context is not connection.get_context():
            connection.set_context(context)

    def _on_alpn(self, connection: SSL.Connection, offered: list[bytes]) -> bytes:
        return alpn_select(connection, offered, self.read_answer, self._validations)

    def read_answer(self, name: str | None) -> bytes | None:
        """The key authorization pending for ``name``, read now from the cache."""
        try:
            return read_alpn_answer(self._alpn_dir, name)
        except AnswerError as exc:
            log.warn("cannot read the tls-alpn-01 answer for {name}: {error}", name=name,
                     error=exc.strerror)
            return None


class PolicyResource(Resource):
    """Every HTTPS request ends here and is answered as ``mtasts.answer_request`` decides."""

    isLeaf = True

    def __init__(self, policy: mtasts.Policy | None, metrics: Metrics | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._policy = policy
        self._served = metrics.mta_sts_policies_served if metrics is not None else None

    def render(self, request: Request) -> bytes:
        answer = mtasts.answer_request(
            request.method.decode("latin-1"), request.uri.decode("latin-1"),
            request.clientproto.decode("latin-1"),
            request.requestHeaders.getRawHeaders(b"host", []), self._policy)
        put_head(request, answer)
        if answer.served is not None:
            peer = request.getClientAddress()  # type: ignore[no-untyped-call]
            log.info("mta-sts policy served for {host} to {client}", host=answer.served,
                     client=getattr(peer, "host", str(peer)))
            if self._served is not None:
                self._served.inc()
        return answer.body


@implementer(IHandshakeListener)
class HTTPSChannel(ChallengeChannel):
    """One HTTPS connection: HTTP/1.1 after the handshake, or -- when the handshake
    selected acme-tls/1 -- the validation certificate was the answer, and it is closed."""

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        handle = transport.getHandle()
        if handle.get_alpn_proto_negotiated() != ACME_TLS_1:
            return
        raw = handle.get_servername()
        log.info("tls-alpn-01 challenge served for {name} to {client}",
                 name=raw.decode("ascii", "replace") if raw else "?",
                 client=str(getattr(transport.getPeer(), "host", "?")))
        served = cast(HTTPSSite, self.site).alpn_served
        if served is not None:
            served.inc()
        transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if reason.check(Refused):  # type: ignore[no-untyped-call]
            log.info("https: refused a TLS-ALPN-01 handshake from {client}: {reason}",
                     client=str(getattr(self.transport.getPeer(), "host", "?")),  # type: ignore[union-attr]
                     reason=reason.getErrorMessage())
        super().connectionLost(reason)


class HTTPSSite(ChallengeSite):
    """The HTTP/1.1 side of the HTTPS listener, bounded like the HTTP-01 site."""

    label = "https"
    protocol = HTTPSChannel
    alpn_served: Counter | None = None  # elemta_acme_challenges_served{type="tls-alpn-01"}


def https_factory(config: Config, certificates: CertificateSource, alpn_dir: Path, *,
                  reactor: IReactorTime | None = None,
                  max_connections: Callable[[], int] = lambda: MAX_CONNECTIONS,
                  deadline: float = REQUEST_DEADLINE,
                  metrics: Metrics | None = None) -> IProtocolFactory:
    """The factory to listen with on ``[tls.letsencrypt] https_addr``: TLS (elemta's
    certificates, TLS-ALPN-01 answers from ``alpn_dir``), then the MTA-STS site (the policy
    only when [mta_sts] is enabled)."""
    served = mtasts.policy(config) if config.mta_sts.enabled else None
    site = HTTPSSite(PolicyResource(served, metrics), reactor, max_connections, deadline)
    if metrics is not None:
        site.alpn_served = metrics.challenges_served.labels("tls-alpn-01")
    return ServerTLSFactory(HTTPSConnections(certificates, alpn_dir), site)
