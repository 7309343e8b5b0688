"""The daemon's HTTP-01 listener: a tiny web site that answers
``/.well-known/acme-challenge/<token>`` from ``<webroot>`` and nothing else.

The certbot plugin writes the answers into ``<cache_dir>/webroot`` (the cache
is the contract between the halves); this site reads them at request time, so
tokens come and go without telling the daemon.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

log = Logger()

CHALLENGE_PREFIX = (b".well-known", b"acme-challenge")
TOKEN = re.compile(rb"\A[A-Za-z0-9_-]{1,256}\Z")
PLAIN_UTF8 = b"text/plain; charset=utf-8"
MAX_ANSWER = 4096  # a key authorization is ~87 bytes: anything bigger is not one


def token_from_path(postpath: list[bytes]) -> str | None:
    """The token a request path asks for, or None when the path is not
    exactly ``.well-known/acme-challenge/<token>`` with a base64url token."""
    if len(postpath) != 3 or tuple(postpath[:2]) != CHALLENGE_PREFIX:
        return None
    if not TOKEN.match(postpath[2]):
        return None
    return postpath[2].decode("ascii")


def read_answer(challenge_dir: Path, token: str) -> bytes | None:
    """The key authorization stored for ``token``, or None when there is no
    such regular file (symlinks are not followed; oversized files are refused)."""
    try:
        fd = os.open(challenge_dir / token, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
            log.warn("cannot read http-01 answer {path}: {error}",
                     path=str(challenge_dir / token), error=exc.strerror)
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ANSWER:
            return None
        return f.read(MAX_ANSWER + 1)[:MAX_ANSWER]


def _headers(request: Request, code: int, **headers: bytes) -> None:
    """Set status and headers (one place for Twisted's untyped setters)."""
    request.setResponseCode(code)
    for name, value in headers.items():
        request.setHeader(name.replace("_", "-").encode(), value)  # type: ignore[no-untyped-call]


class ChallengeResource(Resource):
    """A leaf at the root of the site: every path ends here and is judged by
    ``token_from_path``. Only GET and HEAD exist (others get 405)."""

    isLeaf = True

    def __init__(self, webroot: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._challenge_dir = webroot.joinpath(*(p.decode() for p in CHALLENGE_PREFIX))

    def render(self, request: Request) -> bytes:
        """GET and HEAD; anything else is 405 (answered here: Twisted's own
        405 page goes through a deprecated class)."""
        if request.method not in (b"GET", b"HEAD"):
            _headers(request, http.NOT_ALLOWED, allow=b"GET, HEAD", content_type=PLAIN_UTF8)
            return b"method not allowed\n"
        token = token_from_path(list(request.postpath or []))
        answer = read_answer(self._challenge_dir, token) if token else None
        if answer is None:
            _headers(request, http.NOT_FOUND, cache_control=b"no-store", content_type=PLAIN_UTF8)
            body = b"not found\n"
        else:
            _headers(request, http.OK, cache_control=b"no-store", content_type=b"text/plain")
            body = answer
            if request.method == b"GET":
                peer = request.getClientAddress()  # type: ignore[no-untyped-call]
                log.info("http-01 challenge served token={token} to {client}",
                         token=token, client=getattr(peer, "host", str(peer)))
        if request.method == b"HEAD":
            # Site warns about (and drops) HEAD bodies; give the length ourselves.
            _headers(request, request.code, content_length=b"%d" % len(body))
            return b""
        return body


class ChallengeSite(Site):
    """A Site that keeps quiet: no access log line per request and no
    tracebacks shown to clients; ``ChallengeResource`` logs what matters."""

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """Access logging is off: only served challenges are logged."""


def http01_site(webroot: Path, reactor: IReactorTime | None = None) -> Site:
    """The site to listen with on ``[tls.letsencrypt] http_addr``: it serves
    ``<webroot>/.well-known/acme-challenge/<token>`` as text/plain, 404 elsewhere."""
    site: Site = ChallengeSite(  # type: ignore[no-untyped-call]
        ChallengeResource(webroot), reactor=reactor, timeout=30)
    return site
