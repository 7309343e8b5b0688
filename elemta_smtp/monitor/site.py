"""The ``[metrics] listen_addr`` listener: ``GET /metrics`` and ``GET /healthz``.

It runs on the HTTP-01 listener's bounded site (``acme.http01.ChallengeSite``: a cap on
open connections, a deadline per connection counted from accept, no access log, no
tracebacks), so it keeps the same request limits; what each request gets is decided by
``answer`` below, with the HTTP-01 rules for the Host header and methods.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from elemta_smtp.acme.http01 import ChallengeSite, put_head
from elemta_smtp.cache.challenges import (
    MAX_CONNECTIONS,
    PLAIN_UTF8,
    REQUEST_DEADLINE,
    Answer,
    host_problem,
)
from elemta_smtp.monitor.health import Health

#: The Prometheus text format that ``generate_latest`` writes (every Prometheus reads it).
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json"
PATHS = ("/metrics", "/healthz")


def _answer(method: str, status: int, body: bytes, content_type: str,
            *extra: tuple[str, str], close: bool = False) -> Answer:
    headers = (("Content-Type", content_type), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), *extra)
    return Answer(status, headers, b"" if method == "HEAD" else body, close)


def _path(target: str) -> str:
    """The path of a request target, origin form or absolute form."""
    if target.lower().startswith(("http://", "https://")):
        rest = target.split("//", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return target.split("?", 1)[0]


def answer(method: str, target: str, version: str, hosts: Sequence[str | bytes], *,
           metrics: Callable[[], bytes], health: Callable[[], Health]) -> Answer:
    """What the request ``method target version`` (with these Host values) gets:
    HTTP/1.1 without exactly one Host: 400, closed; not GET or HEAD: 405; ``/metrics``:
    200 and the text format; ``/healthz``: 200 or 503 and the JSON verdict; else 404.
    A query string is ignored; the absolute form (``GET http://host:9465/metrics``, RFC 9112
    3.2.2) is read like the origin form."""
    problem = host_problem(version, hosts)
    if problem is not None:
        return _answer(method, 400, f"bad request: {problem}\n".encode(), PLAIN_UTF8,
                       ("Connection", "close"), close=True)
    if method not in ("GET", "HEAD"):
        return _answer(method, 405, b"method not allowed\n", PLAIN_UTF8, ("Allow", "GET, HEAD"))
    path = _path(target)
    if path == "/metrics":
        return _answer(method, 200, metrics(), METRICS_TYPE)
    if path == "/healthz":
        verdict = health()
        body = json.dumps(verdict.body, sort_keys=True).encode() + b"\n"
        return _answer(method, verdict.status, body, JSON_TYPE)
    return _answer(method, 404, b"not found: try /metrics or /healthz\n", PLAIN_UTF8)


class MonitorResource(Resource):
    """Every request ends here and is answered as ``answer`` decides."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, health: Callable[[], Health]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry
        self._health = health

    def _metrics(self) -> bytes:
        return generate_latest(self._registry)

    def render(self, request: Request) -> bytes:
        reply = answer(request.method.decode("latin-1"), request.uri.decode("latin-1"),
                       request.clientproto.decode("latin-1"),
                       request.requestHeaders.getRawHeaders(b"host", []),
                       metrics=self._metrics, health=self._health)
        put_head(request, reply)
        return reply.body


def monitor_site(registry: CollectorRegistry, health: Callable[[], Health],
                 reactor: IReactorTime | None = None,
                 max_connections: Callable[[], int] = lambda: MAX_CONNECTIONS,
                 deadline: float = REQUEST_DEADLINE) -> ChallengeSite:
    """The site to listen with on ``[metrics] listen_addr``."""
    return ChallengeSite(MonitorResource(registry, health), reactor, max_connections, deadline,
                         label="metrics")
