"""The daemon's HTTP-01 listener: a tiny web site that answers
``/.well-known/acme-challenge/<token>`` from ``<webroot>`` and nothing else.

The certbot plugin writes the answers into ``<cache_dir>/webroot`` (the cache
is the contract between the halves); this site reads them at request time, so
tokens come and go without telling the daemon. In a cluster, a token this host does not
have is looked up in the shared store (``shared``, off the reactor thread): the CA may ask
any node for an answer another node's certbot wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from elemta_smtp.cache.challenges import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE,
    Answer,
    AnswerError,
    answer_request,
    read_answer,
    token_of,
)

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics

log = Logger()

WELL_KNOWN = (".well-known", "acme-challenge")
#: The shared store's answer for a challenge type and key (None: none there).
SharedLookup = Callable[[str, str], Deferred[bytes | None]]


def put_head(request: Request, answer: Answer) -> None:
    """Status, headers and keep-alive of ``answer`` onto ``request``: how every bounded
    listener (HTTP-01, HTTPS, metrics) answers; the caller returns ``answer.body``."""
    if answer.close:
        request.channel.persistent = False
    request.setResponseCode(answer.status)
    for name, value in answer.headers:
        request.setHeader(name.encode(), value.encode())  # type: ignore[no-untyped-call]


class ChallengeResource(Resource):
    """A leaf at the root of the site: every request ends here and is answered as
    ``cache.challenges.answer_request`` decides (the rules the plugin's listener follows
    too); this class only reads the request and writes the answer."""

    isLeaf = True

    def __init__(self, webroot: Path, shared: SharedLookup | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._challenge_dir = webroot.joinpath(*WELL_KNOWN)
        self._shared = shared
        self._served = metrics.challenges_served.labels("http-01") if metrics is not None else None

    def _read(self, token: str) -> bytes | None:
        try:
            return read_answer(self._challenge_dir, token)
        except AnswerError as exc:
            log.warn("cannot read http-01 answer: {error}", error=exc.strerror)
            return None

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("latin-1")
        target = request.uri.decode("latin-1")
        version = request.clientproto.decode("latin-1")
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        answer = answer_request(method, target, version, hosts, self._read)
        token = token_of(target)
        if answer.status != 404 or self._shared is None or token is None:
            return self._send(request, answer)

        def shared(found: bytes | None) -> None:
            if request.finished or request.channel is None:  # the client went away
                return
            reply = answer_request(method, target, version, hosts, lambda _: found)
            request.write(self._send(request, reply, " (from the cluster's store)"))  # type: ignore[no-untyped-call]
            request.finish()  # type: ignore[no-untyped-call]

        self._shared("http-01", token).addCallback(shared).addErrback(
            lambda f: log.failure("http-01: shared answer lookup failed", failure=f))
        return NOT_DONE_YET

    def _send(self, request: Request, answer: Answer, where: str = "") -> bytes:
        put_head(request, answer)
        if answer.served is not None:
            peer = request.getClientAddress()  # type: ignore[no-untyped-call]
            log.info("http-01 challenge served token={token} to {client}{where}",
                     token=answer.served, client=getattr(peer, "host", str(peer)), where=where)
            if self._served is not None:
                self._served.inc()
        return answer.body


class ChallengeChannel(http.HTTPChannel):
    """One HTTP connection, closed ``REQUEST_DEADLINE`` seconds after it was accepted
    whatever the client sends meanwhile (Twisted's own timeout restarts on every byte)."""

    site: ChallengeSite
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self.site.connection_opened()
        self._deadline = self.site.reactor.callLater(self.site.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        log.debug("{label}: dropping {client}: still open after {deadline:g}s",
                  label=self.site.label, client=_host(transport.getPeer()),
                  deadline=self.site.deadline)
        transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.site.connection_closed()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


def _host(address: IAddress | None) -> str:
    return str(getattr(address, "host", address))


class ChallengeSite(Site):
    """A bounded, quiet Site: at most ``max_connections()`` connections open (others are
    closed at once, unread), each for at most ``deadline`` seconds; no access log line per
    request and no tracebacks shown to clients (``ChallengeResource`` logs what matters).
    Refusing starts and stops are logged once each, not per connection."""

    noisy = False
    displayTracebacks = False
    label = "http-01"  # the listener's name in log lines
    protocol = ChallengeChannel  # type: ignore[assignment]  # plain HTTP/1.1, no HTTP/2 wrapper

    def __init__(self, resource: Resource, reactor: IReactorTime | None,
                 max_connections: Callable[[], int], deadline: float,
                 label: str | None = None) -> None:
        super().__init__(resource, reactor=reactor, timeout=None)  # type: ignore[no-untyped-call]
        if label is not None:
            self.label = label
        self.max_connections = max_connections
        self.deadline = deadline
        self.open = 0
        self._refused = 0  # since the last time a connection was accepted

    def buildProtocol(self, addr: IAddress | None) -> ChallengeChannel | None:  # type: ignore[override]
        cap = self.max_connections()
        if self.open >= cap:
            if self._refused == 0:
                log.warn("{label} listener full ({open} connections open, at most {cap}): "
                         "refusing new connections until some close",
                         label=self.label, open=self.open, cap=cap)
            self._refused += 1
            return None
        if self._refused:
            log.info("{label} listener accepting again ({refused} connections refused meanwhile)",
                     label=self.label, refused=self._refused)
            self._refused = 0
        channel: ChallengeChannel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        return channel

    def connection_opened(self) -> None:
        self.open += 1

    def connection_closed(self) -> None:
        self.open -= 1

    def log(self, request: http.Request) -> None:
        """Access logging is off: only served challenges are logged."""


def http01_site(webroot: Path, reactor: IReactorTime | None = None,
                max_connections: Callable[[], int] = lambda: MAX_CONNECTIONS,
                deadline: float = REQUEST_DEADLINE, *, shared: SharedLookup | None = None,
                metrics: Metrics | None = None) -> Site:
    """The site to listen with on ``[tls.letsencrypt] http_addr``: it serves
    ``<webroot>/.well-known/acme-challenge/<token>`` as text/plain, 404 elsewhere.
    ``max_connections()`` is asked at each accept (the daemon lowers it when file
    descriptors run short)."""
    return ChallengeSite(ChallengeResource(webroot, shared, metrics), reactor, max_connections,
                         deadline)
