"""Fetching a certificate's renewal information from the CA (RFC 9773), blocking, with the
standard library only: the manager runs ``fetch`` in a thread, off the reactor.

The directory's ``renewalInfo`` URL, then ``<renewalInfo>/<certID>``; no ACME account is
needed. The CA's API is trusted like certbot trusts it: the system's CA store, or
``REQUESTS_CA_BUNDLE`` when set (as for certbot against a test CA).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime

from elemta_smtp.acme.ari import RETRY_DEFAULT, RETRY_ERROR, Answer, parse_renewal_info

TIMEOUT = 10.0
_LIMIT = 64 * 1024  # a directory or a renewalInfo document is a few hundred bytes


def _context(environ: Mapping[str, str]) -> ssl.SSLContext:
    bundle = environ.get("REQUESTS_CA_BUNDLE") or None
    return ssl.create_default_context(cafile=bundle)


def _get(url: str, context: ssl.SSLContext, timeout: float) -> tuple[bytes, dict[str, str]]:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={  # noqa: S310  (scheme checked above)
        "User-Agent": "elemta (ARI)", "Accept": "application/json"})
    deadline = time.monotonic() + timeout  # in all, not per read: a server may trickle
    with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310  (scheme checked above)
                                context=context) as response:
        body = b""
        while len(body) < _LIMIT:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no whole answer within {timeout:g}s")
            chunk = response.read1(_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
        return body, {k.lower(): v for k, v in response.headers.items()}


def renewal_info_url(directory_url: str, context: ssl.SSLContext,
                     timeout: float = TIMEOUT) -> str | None:
    """The directory's ``renewalInfo`` URL; None when the CA offers none. Raises ``OSError``
    (urllib's errors are OSErrors) or ``ValueError`` for a directory it cannot read."""
    body, _ = _get(directory_url, context, timeout)
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("the ACME directory is not a JSON object")
    url = doc.get("renewalInfo")
    return url if isinstance(url, str) and url else None


def fetch(directory_url: str, ident: str, now: datetime, timeout: float = TIMEOUT,
          environ: Mapping[str, str] = os.environ) -> Answer:
    """Ask the CA of ``directory_url`` about certificate ``ident`` (``ari.cert_id``). Never
    raises: a failure is an ``Answer`` with ``error`` set (and the next try in an hour)."""
    try:
        return _fetch(directory_url, ident, now, timeout, environ)
    except Exception as exc:  # a CA's answer must never stop a check
        return Answer(None, now + RETRY_ERROR,
                      error=f"cannot use the renewalInfo of {directory_url}: {_reason(exc)}")


def _fetch(directory_url: str, ident: str, now: datetime, timeout: float,
           environ: Mapping[str, str]) -> Answer:
    context = _context(environ)
    try:
        url = renewal_info_url(directory_url, context, timeout)
    except (OSError, ValueError) as exc:
        return Answer(None, now + RETRY_ERROR, error=f"cannot read the ACME directory "
                                                     f"{directory_url}: {_reason(exc)}")
    if url is None:
        return Answer(None, now + RETRY_DEFAULT, supported=False,
                      error=f"the ACME directory {directory_url} offers no renewalInfo")
    try:
        body, headers = _get(f"{url.rstrip('/')}/{ident}", context, timeout)
    except (OSError, ValueError) as exc:
        return Answer(None, now + RETRY_ERROR, error=f"cannot fetch {url}/{ident}: {_reason(exc)}")
    return parse_renewal_info(body, headers, now)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
