"""Challenge answers in the cache, and the rules every HTTP-01 listener of elemta follows.

One folder per challenge type: HTTP-01 answers are files named after their token in
``<cache_dir>/webroot/.well-known/acme-challenge/`` (``layout.challenge_dir``); TLS-ALPN-01
answers are files named after the pending DNS name in ``<cache_dir>/tls-alpn-01/``
(``layout.tls_alpn_dir``), each holding that name's key authorization. Both are written by
the same writer below (atomic, 0644 in 0755 folders) and read by the same reader.

Both halves use this module: the certbot plugin writes and removes answers, and serves
them itself while no daemon listens; the daemon's Twisted site (``acme/http01.py``)
serves them; ``elemta cert test`` writes a probe and fetches it back. Which request gets
which status and body is decided once, by ``answer_request``; the listeners only carry
it out. Plain Python (no Twisted, no certbot), so the plugin can use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.certs.names import is_dns_name, normalize
from elemta_smtp.errors import ChallengeError, WriteError

#: HTTP-01 tokens are base64url without padding (RFC 8555 section 8.3); nothing else is a file name.
TOKEN = re.compile(r"\A[A-Za-z0-9_-]{1,256}\Z")
MAX_ANSWER = 4096  # a key authorization is ~87 bytes: anything bigger is not one
#: The request path of an HTTP-01 answer is this plus the token.
PATH_PREFIX = "/.well-known/acme-challenge/"

#: Answers are world-readable and their folders world-searchable, whatever the writer's
#: umask: the daemon reads them as whichever user it runs as.
ANSWER_UMASK = 0o022
ANSWER_FILE_MODE = 0o644
ANSWER_DIR_MODE = 0o755

#: Seconds one HTTP connection may stay open, counted from accept, whatever the client sends
#: meanwhile (a client trickling a byte a second cannot stretch it). A CA's validation request
#: arrives in one packet and is answered at once; nothing honest needs more than a moment.
REQUEST_DEADLINE = 10.0
#: HTTP connections open at once, at most. Let's Encrypt validates each name from a handful
#: of vantage points, one connection each; 64 leaves room for several names and retries and
#: stays far below an SMTP listener's ``max_connections`` (default 1000).
MAX_CONNECTIONS = 64
#: Seconds a self-check waits for the listener's answer.
FETCH_TIMEOUT = 5.0

_RETRY = "Run certbot as the user that owns elemta's cache_dir (or root)."


class AnswerError(OSError):
    """The answer file exists but cannot be read (neither missing nor refused by the rules)."""


def is_token(token: str) -> bool:
    """A base64url token (1..256 of ``[A-Za-z0-9_-]``): the only names written or served."""
    return TOKEN.match(token) is not None


# --- writing (the certbot plugin, `elemta cert test`) -----------------------------------

@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def answer_path(challenge_dir: Path, token: str) -> Path:
    """Where the answer for ``token`` lives; a token that is not base64url is refused."""
    if not is_token(token):
        raise ChallengeError(
            f"The CA sent the HTTP-01 token {token!r}, which is not base64url "
            "(letters, digits, '-' and '_'): refusing to use it as a file name. "
            "Check that --server points at a real ACME CA.")
    return challenge_dir / token


def make_dirs(challenge_dir: Path) -> None:
    """Create ``challenge_dir`` and its missing parents with mode 0755."""
    missing = [p for p in (challenge_dir, *challenge_dir.parents) if not p.is_dir()]
    with _umask(ANSWER_UMASK):
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=ANSWER_DIR_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ChallengeError(f"Could not create {directory} for the challenge answers: "
                                     f"{exc.strerror}. {_RETRY}", exc.strerror or "") from None
            os.chmod(directory, ANSWER_DIR_MODE)


def _write_public(folder: Path, path: Path, data: bytes, what: str) -> Path:
    """Write one answer file (0644) atomically into ``folder``, created 0755 if missing."""
    make_dirs(folder)
    try:
        atomic_write(path, data, mode=ANSWER_FILE_MODE)
    except WriteError as exc:
        raise ChallengeError(f"Could not write the {what} {path}: {exc.strerror}. {_RETRY}",
                             exc.strerror) from None
    return path


def write_answer(challenge_dir: Path, token: str, validation: str | bytes) -> Path:
    """Write the key authorization for ``token`` (0644) and return its path."""
    data = validation.encode("ascii") if isinstance(validation, str) else validation
    return _write_public(challenge_dir, answer_path(challenge_dir, token), data,
                         "HTTP-01 answer")


def alpn_answer_path(alpn_dir: Path, name: str) -> Path:
    """Where the TLS-ALPN-01 key authorization for ``name`` lives; a name that is not a
    plain DNS name (no wildcard, no path) is refused."""
    clean = normalize(name)
    if not is_dns_name(clean):
        raise ChallengeError(
            f"The CA asked for a TLS-ALPN-01 answer for {name!r}, which is not a DNS name: "
            "refusing to use it as a file name. Check that --server points at a real ACME CA.")
    return alpn_dir / clean


def write_alpn_answer(alpn_dir: Path, name: str, key_authorization: str) -> Path:
    """Write the key authorization for ``name`` (0644) into ``<cache_dir>/tls-alpn-01/``."""
    return _write_public(alpn_dir, alpn_answer_path(alpn_dir, name),
                         key_authorization.encode("ascii"), "TLS-ALPN-01 answer")


def read_alpn_answer(alpn_dir: Path, name: str | None) -> bytes | None:
    """The key authorization pending for ``name`` (a client's SNI: anything), or None when
    there is none, ``name`` is no DNS name, or the file is not a plain small file (the
    rules of ``read_answer``). Raises ``AnswerError`` for other I/O errors."""
    if not name:
        return None
    clean = normalize(name)
    if not is_dns_name(clean):
        return None
    found = _read_file(alpn_dir / clean)
    return found.strip() if found is not None else None


def forget_alpn_answer(alpn_dir: Path, name: str) -> None:
    """Remove the TLS-ALPN-01 answer for ``name`` (gone already is fine)."""
    remove_answer(alpn_answer_path(alpn_dir, name))


def remove_answer(path: Path) -> None:
    """Remove an answer; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- reading and serving (every HTTP-01 listener) ---------------------------------------

def read_answer(challenge_dir: Path, token: str) -> bytes | None:
    """The key authorization stored for ``token``, or None when there is no such regular
    file: missing, a folder, a symlink (never followed), a device or FIFO (never read),
    or too big to be a key authorization. Raises ``AnswerError`` for other I/O errors
    (the caller logs it). The file descriptor is always closed."""
    if not is_token(token):
        return None
    return _read_file(challenge_dir / token)


def _read_file(path: Path) -> bytes | None:
    """One answer file: never through a symlink, only a regular file of MAX_ANSWER bytes
    at most (else None); other I/O errors raise ``AnswerError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EISDIR):
            return None
        raise AnswerError(exc.errno, f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ANSWER:
            return None
        return os.read(fd, MAX_ANSWER + 1)[:MAX_ANSWER]
    except OSError as exc:
        raise AnswerError(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def host_problem(version: str, hosts: Sequence[str | bytes]) -> str | None:
    """Why a request with this HTTP ``version`` ("HTTP/1.1") and these ``Host`` header values
    must get 400 (RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host), or None when fine."""
    if len(hosts) > 1:
        return "more than one Host header"
    if not hosts and version not in ("HTTP/1.0", "HTTP/0.9"):
        return f"{version} request without a Host header"
    return None


def token_of(target: str) -> str | None:
    """The token a request target asks for: exactly ``/.well-known/acme-challenge/<token>``
    (a query is ignored) with a base64url token, else None. Nothing is percent-decoded: a
    token never needs escaping, so an escaped one is not a token."""
    path = target.split("?", 1)[0]
    if not path.startswith(PATH_PREFIX):
        return None
    token = path[len(PATH_PREFIX):]
    return token if is_token(token) else None


PLAIN_UTF8 = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """What a listener sends back for one request. ``body`` is empty for HEAD while
    Content-Length is the GET body's; ``close``: end the connection after it; ``served``:
    the token whose answer went out (for the listener's one log line), else None."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    close: bool = False
    served: str | None = None


def make_answer(method: str, status: int, body: bytes, content_type: str,
                *extra: tuple[str, str], close: bool = False, served: str | None = None) -> Answer:
    """The ``Answer`` for ``method`` (no body for HEAD, nothing "served" but for GET)."""
    headers = (("Content-Type", content_type), ("Content-Length", str(len(body))), *extra)
    return Answer(status, headers, b"" if method == "HEAD" else body, close,
                  served if method == "GET" else None)


def answer_request(method: str, target: str, version: str, hosts: Sequence[str | bytes],
                   read: Callable[[str], bytes | None]) -> Answer:
    """The HTTP-01 rules, for the request line ``method target version`` with these ``Host``
    values; ``read(token)`` returns the stored answer or None.

    HTTP/1.1 without exactly one Host: 400, connection closed. Methods other than GET and
    HEAD: 405. ``/.well-known/acme-challenge/<token>`` with a stored answer: 200 text/plain,
    the key authorization; anything else: 404. Nothing is cached (no-store).
    """
    problem = host_problem(version, hosts)
    if problem is not None:  # RFC 9112: 400; and the connection is closed after it
        return make_answer(method, 400, f"bad request: {problem}\n".encode(), PLAIN_UTF8,
                       ("Connection", "close"), close=True)
    if method not in ("GET", "HEAD"):
        return make_answer(method, 405, b"method not allowed\n", PLAIN_UTF8, ("Allow", "GET, HEAD"))
    token = token_of(target)
    found = read(token) if token is not None else None
    if found is None:
        return make_answer(method, 404, b"not found\n", PLAIN_UTF8, ("Cache-Control", "no-store"))
    return make_answer(method, 200, found, "text/plain", ("Cache-Control", "no-store"),
                   served=token)


# --- the self-check (the plugin before answering the CA, `elemta cert test`) ----------

def fetch_answer(connect_host: str, port: int, token: str, domain: str,
                 timeout: float = FETCH_TIMEOUT) -> tuple[int, bytes]:
    """GET the answer of ``token`` from ``connect_host:port`` as the CA would (``Host:
    <domain>``, the CA's port 80 being forwarded there); (status, at most MAX_ANSWER bytes
    of body). Raises ``OSError`` when the listener cannot be reached."""
    import http.client  # noqa: PLC0415  (self-checks only: the daemon never needs it)

    conn = http.client.HTTPConnection(connect_host, port, timeout=timeout)
    try:
        conn.request("GET", PATH_PREFIX + token, headers={"Host": domain, "User-Agent": "elemta"})
        response = conn.getresponse()
        return response.status, response.read(MAX_ANSWER)
    except http.client.HTTPException as exc:  # a listener that does not speak HTTP
        raise OSError(f"not an HTTP answer ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()
