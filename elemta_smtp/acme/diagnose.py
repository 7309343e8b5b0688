"""The steps behind ``elemta cert test`` (commands/cert_test.py): a diagnosis of what certificate issuance
needs (config, DNS, this host's addresses, the HTTP-01 listener and a probe token
fetched back through the domain, the ACME directory, optionally a certbot
--dry-run), each step marked with what to fix."""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import ssl
import urllib.request
from collections.abc import Callable, Sequence
from typing import TextIO

from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import fetch_answer, remove_answer, write_alpn_answer, write_answer
from elemta_smtp.cache.tlsalpn import fetch_validation, validates
from elemta_smtp.config import Config
from elemta_smtp.errors import ChallengeError

Resolver = Callable[[str], list[str]]


def resolve(domain: str) -> list[str]:
    """The domain's A and AAAA addresses."""
    infos = socket.getaddrinfo(domain, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_local_address(address: str) -> bool:
    """Whether ``address`` belongs to this host: binding to it works only if it does."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return False
        raise
    return True


class Report:
    """Prints one line per step: [ ok ], [FAIL], [warn] or [skip], with what to do."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0

    def ok(self, text: str) -> None:
        print(f"[ ok ] {text}", file=self.out)

    def fail(self, text: str, fix: str) -> None:
        self.failed += 1
        print(f"[FAIL] {text}\n       fix: {fix}", file=self.out)

    def warn(self, text: str) -> None:
        print(f"[warn] {text}", file=self.out)

    def skip(self, text: str) -> None:
        print(f"[skip] {text}", file=self.out)


def check_http01(config: Config, addresses: Sequence[str], report: Report,
                 timeout: float = 10.0) -> None:
    """The HTTP-01 listener answers, and a probe token in the webroot comes back through
    http://<domain>/.well-known/acme-challenge/<token> at every resolved address."""
    le = config.tls.letsencrypt
    http_addr = le.http_addr
    if http_addr is None:
        report.skip("HTTP-01: [tls.letsencrypt] http_addr is off (another certbot authenticator "
                    "must answer challenges)")
        return
    try:
        with socket.create_connection((http_addr.connect_host, http_addr.port), timeout=timeout):
            pass
        report.ok(f"HTTP-01 listener answers on {http_addr}")
    except OSError as exc:
        report.fail(f"nothing answers on the HTTP-01 listener {http_addr}: {exc.strerror or exc}",
                    "start the daemon (`systemctl start elemta` or `elemta serve`)")
        return
    if http_addr.port != 80:
        report.warn(f"http_addr uses port {http_addr.port}: the CA always connects to port 80, "
                    "so port 80 must be forwarded to it")
    if not addresses:
        report.skip(f"HTTP-01 probe through http://{le.domain}/: the domain does not resolve")
        return
    token = secrets.token_urlsafe(24)
    content = secrets.token_urlsafe(32).encode()
    folder = layout.challenge_dir(le.cache_dir)
    try:
        path = write_answer(folder, token, content)
    except ChallengeError as exc:
        report.fail(f"cannot write a probe token into {folder}: {exc.strerror or exc}",
                    "run `elemta cert test` as the elemta user (or root)")
        return
    try:
        for address in addresses:
            url = f"http://{le.domain}:{http_addr.port}/.well-known/acme-challenge/{token}"
            try:
                status, body = fetch_answer(address, http_addr.port, token, le.domain, timeout)
            except OSError as exc:
                report.fail(f"fetching {url} via {address} failed: {exc.strerror or exc}",
                            f"open port {http_addr.port} to this host in firewalls/NAT, or fix "
                            f"the DNS record of {le.domain}")
                continue
            if status == 200 and body == content:
                report.ok(f"probe token fetched back from {url} via {address}")
            else:
                report.fail(f"{url} via {address} answered HTTP {status} without the probe token",
                            f"{address} is not served by this elemta: fix the DNS record of "
                            f"{le.domain} or the port forwarding to {http_addr}")
    finally:
        remove_answer(path)


def check_tlsalpn01(config: Config, addresses: Sequence[str], report: Report,
                    timeout: float = 10.0) -> None:
    """The HTTPS listener answers TLS-ALPN-01 at every resolved address: a probe answer for
    a name of its own (so a challenge certbot runs meanwhile is untouched) is written, and
    a handshake as the CA makes it must present its validation certificate."""
    le = config.tls.letsencrypt
    https_addr = le.https_addr
    if https_addr is None:
        report.skip("TLS-ALPN-01: [tls.letsencrypt] https_addr is off")
        return
    try:
        with socket.create_connection((https_addr.connect_host, https_addr.port), timeout=timeout):
            pass
        report.ok(f"HTTPS listener answers on {https_addr}")
    except OSError as exc:
        report.fail(f"nothing answers on the HTTPS listener {https_addr}: {exc.strerror or exc}",
                    "start the daemon (`systemctl start elemta` or `elemta serve`)")
        return
    if https_addr.port != 443:
        report.warn(f"https_addr uses port {https_addr.port}: the CA and MTA-STS senders always "
                    "connect to port 443, so port 443 must be forwarded to it")
    if not addresses:
        report.skip(f"TLS-ALPN-01 probe through {le.domain}:443: the domain does not resolve")
        return
    name = f"elemta-probe-{secrets.token_hex(6)}.{le.domain}"
    key_authorization = secrets.token_urlsafe(32)
    folder = layout.tls_alpn_dir(le.cache_dir)
    try:
        path = write_alpn_answer(folder, name, key_authorization)
    except ChallengeError as exc:
        report.fail(f"cannot write a probe answer into {folder}: {exc.strerror or exc}",
                    "run `elemta cert test` as the elemta user (or root)")
        return
    try:
        for address in addresses:
            where = f"{address} port {https_addr.port}"
            try:
                cert = fetch_validation(address, https_addr.port, name, timeout)
            except OSError as exc:
                report.fail(f"TLS-ALPN-01 handshake with {where} failed: {exc}",
                            f"open port {https_addr.port} to this host in firewalls/NAT, make sure "
                            f"no other program answers there, or fix the DNS record of {le.domain}")
                continue
            problem = validates(cert, name, key_authorization.encode())
            if problem is None:
                report.ok(f"TLS-ALPN-01 probe answered via {where}")
            else:
                report.fail(f"TLS-ALPN-01 probe via {where}: {problem}",
                            f"{address} is not served by this elemta: fix the DNS record of "
                            f"{le.domain} or the port forwarding to {https_addr}")
    finally:
        remove_answer(path)


def check_directory(url: str, report: Report, timeout: float = 15.0) -> None:
    """GET the ACME directory (trusting REQUESTS_CA_BUNDLE when set, as certbot does)."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or None
    context = ssl.create_default_context(cafile=cafile)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            directory = json.loads(response.read(1 << 20))
    except (OSError, ValueError) as exc:
        report.fail(f"ACME directory {url} not reachable: {exc}",
                    "allow outgoing HTTPS from this host; check [tls.letsencrypt] directory_url "
                    "(and REQUESTS_CA_BUNDLE for a private CA)")
        return
    missing = [k for k in ("newNonce", "newAccount", "newOrder") if k not in directory]
    if missing:
        report.fail(f"{url} is not an ACME directory (no {', '.join(missing)})",
                    "set [tls.letsencrypt] directory_url to the CA's directory URL")
    else:
        report.ok(f"ACME directory {url} reachable")
