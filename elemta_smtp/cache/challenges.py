"""The rules every HTTP-01 listener of elemta follows, the daemon's Twisted site
(``acme/http01.py``) and the certbot plugin's short-lived listener alike: which
file answers a token, how long one connection may take, how many may be open,
and which requests are malformed. Plain Python (no Twisted), so the plugin can use it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

#: HTTP-01 tokens are base64url without padding (RFC 8555 section 8.3); nothing else is a file name.
TOKEN = re.compile(r"\A[A-Za-z0-9_-]{1,256}\Z")
MAX_ANSWER = 4096  # a key authorization is ~87 bytes: anything bigger is not one

#: Seconds one HTTP connection may stay open, counted from accept, whatever the client sends
#: meanwhile (a client trickling a byte a second cannot stretch it). A CA's validation request
#: arrives in one packet and is answered at once; nothing honest needs more than a moment.
REQUEST_DEADLINE = 10.0
#: HTTP connections open at once, at most. Let's Encrypt validates each name from a handful
#: of vantage points, one connection each; 64 leaves room for several names and retries and
#: stays far below an SMTP listener's ``max_connections`` (default 1000).
MAX_CONNECTIONS = 64


class AnswerError(OSError):
    """The answer file exists but cannot be read (neither missing nor refused by the rules)."""


def is_token(token: str) -> bool:
    """A base64url token (1..256 of ``[A-Za-z0-9_-]``): the only names served."""
    return TOKEN.match(token) is not None


def read_answer(challenge_dir: Path, token: str) -> bytes | None:
    """The key authorization stored for ``token``, or None when there is no such regular
    file: missing, a folder, a symlink (never followed), a device or FIFO (never read),
    or too big to be a key authorization. Raises ``AnswerError`` for other I/O errors
    (the caller logs it). The file descriptor is always closed."""
    if not is_token(token):
        return None
    path = challenge_dir / token
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
