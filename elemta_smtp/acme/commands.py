"""``elemta cert renew`` and ``elemta cert test``: the functions behind the commands.

Both run outside the daemon, synchronously; certbot runs as a child in its own
process group and is killed (with the group) at ``renewal_timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import json
import os
import pwd
import secrets
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from cryptography import x509

from elemta_smtp.acme.runner import certonly_command, renew_command
from elemta_smtp.config import Config
from elemta_smtp.tls import store
from elemta_smtp.tls.bundle import serial_hex

EXIT_OK = 0
EXIT_FAILURE = 1

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True)
class Completed:
    ok: bool
    reason: str


def run_certbot(argv: Sequence[str], timeout: float) -> Completed:
    """Run certbot in a new session; at ``timeout`` SIGTERM then SIGKILL its process group."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                output, _ = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
            return Completed(False, f"certbot did not finish within {timeout:g}s and was "
                                    "killed ([tls.renewal] renewal_timeout)\n" + _tail(output))
    if process.returncode != 0:
        return Completed(False, f"certbot exited with status {process.returncode}:\n"
                                + _tail(output))
    return Completed(True, "")


def _tail(output: bytes | None, lines: int = 12) -> str:
    text = (output or b"").decode("utf-8", "replace")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


@dataclass(frozen=True)
class CertSummary:
    serial: str
    not_after: datetime


def cached_certificate(config: Config) -> CertSummary | None:
    """The certificate in ``live/<domain>.pem``, or None when there is none or it is unreadable."""
    le = config.tls.letsencrypt
    try:
        bundle = store.read_bundle(store.certificate_path(le.cache_dir, le.domain))
    except (store.StoreError, store.InvalidCertificate, store.InvalidName, OSError):
        return None
    return CertSummary(serial_hex(bundle.leaf), bundle.leaf.not_valid_after_utc)


def _loopback(host: str) -> str:
    if not host or ipaddress.ip_address(host).is_unspecified:
        return "::1" if ":" in host else "127.0.0.1"
    return host


def served_serial(config: Config, timeout: float = 3.0) -> str | None:
    """The serial the running daemon presents: after STARTTLS on the plain listener,
    else on the implicit-TLS port (SNI = domain). None when neither answers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    domain = config.tls.letsencrypt.domain
    der: bytes | None = None
    plain, implicit = config.server.listen_addr, config.tls.listen_addr
    if not config.tls.enabled:
        return None
    if plain is not None and config.tls.enable_starttls:
        with contextlib.suppress(OSError, ssl.SSLError, smtplib.SMTPException), \
                smtplib.SMTP(_loopback(plain.host), plain.port, timeout=timeout) as client:
            client.ehlo("elemta-cert-renew.invalid")
            client.starttls(context=context)
            if isinstance(client.sock, ssl.SSLSocket):
                der = client.sock.getpeercert(binary_form=True)
    if der is None and implicit is not None:
        with contextlib.suppress(OSError, ssl.SSLError), \
                socket.create_connection((_loopback(implicit.host), implicit.port),
                                         timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=domain) as tls:
            der = tls.getpeercert(binary_form=True)
    return serial_hex(x509.load_der_x509_certificate(der)) if der else None


def _daemon_pid(config: Config) -> int | None:
    try:
        pid = int(config.server.pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wrong_user(cache_dir: Path, command: str, euid: int | None = None) -> str | None:
    """Why running certbot as root would break the cache of a daemon that runs as another
    user (root-owned files it can neither read nor update), as an error line; else None."""
    euid = os.geteuid() if euid is None else euid
    try:
        owner = cache_dir.stat().st_uid
    except OSError:
        return None
    if euid != 0 or owner == 0:
        return None
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    return (f"error: {cache_dir} belongs to {name}, the user elemta runs as; as root, certbot "
            f"would leave files there that elemta cannot read or renew. Run: sudo -u {name} "
            f"{command}")


def cert_renew_main(config: Config, out: TextIO) -> int:
    """``elemta cert renew``: force a renewal now, print old and new serial and
    not-after, and make sure the running daemon serves the new certificate."""
    le = config.tls.letsencrypt
    refusal = wrong_user(le.cache_dir, f"elemta cert renew -c {config.path or 'PATH'}")
    if refusal:
        print(refusal, file=out)
        return EXIT_FAILURE
    lineage = le.cache_dir / "certbot" / "config" / "renewal" / f"{le.domain}.conf"
    old = cached_certificate(config)
    if old is None:
        print(f"no certificate for {le.domain} in {le.cache_dir / 'live'} yet", file=out)
    else:
        print(f"current: serial {old.serial}, not after {old.not_after.isoformat()}", file=out)
    if not lineage.exists():
        print(f"error: certbot has no certificate named {le.domain} in "
              f"{lineage.parent.parent} to renew. With [tls.letsencrypt] enabled = true, "
              "`elemta serve` obtains one at start; run `elemta cert test` to see what stops it.",
              file=out)
        return EXIT_FAILURE
    print(f"renewing {le.domain} with certbot (up to {config.tls.renewal.renewal_timeout:g}s)...",
          file=out)
    done = run_certbot(renew_command(config, force=True), config.tls.renewal.renewal_timeout)
    if not done.ok:
        print(f"error: renewal failed: {done.reason}", file=out)
        print("the old certificate is still served; run `elemta cert test` to diagnose", file=out)
        return EXIT_FAILURE
    new = cached_certificate(config)
    if new is None or (old is not None and new.serial == old.serial):
        print(f"error: certbot succeeded but {store.certificate_path(le.cache_dir, le.domain)} "
              "was not updated: is the elemta installer recorded in certbot's renewal "
              f"config ({lineage})?", file=out)
        return EXIT_FAILURE
    print(f"renewed: serial {old.serial if old else '-'} -> {new.serial}", file=out)
    print(f"not after: {old.not_after.isoformat() if old else '-'} -> "
          f"{new.not_after.isoformat()}", file=out)
    pid = _daemon_pid(config)
    if pid is None:
        print("the daemon is not running; it serves the new certificate when it starts", file=out)
        return EXIT_OK
    for attempt in range(2):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            serving = served_serial(config)
            if serving == new.serial:
                print(f"the daemon (pid {pid}) serves serial {new.serial}", file=out)
                return EXIT_OK
            time.sleep(0.2)
        if attempt == 0:  # the installer's SIGHUP did not take (yet): send one ourselves
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGHUP)
    print(f"warning: the daemon (pid {pid}) still serves serial {served_serial(config)}; "
          "look at its log for a rejected certificate, then `systemctl reload elemta`", file=out)
    return EXIT_FAILURE


# --- elemta cert test ---


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


def _fetch_token(address: str, port: int, domain: str, token: str, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", f"/.well-known/acme-challenge/{token}",
                           headers={"Host": domain if port == 80 else f"{domain}:{port}"})
        response = connection.getresponse()
        return response.status, response.read(4096)
    finally:
        connection.close()


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
    local = http_addr.host or "127.0.0.1"
    if ipaddress.ip_address(local).is_unspecified:
        local = "127.0.0.1"
    try:
        with socket.create_connection((local, http_addr.port), timeout=timeout):
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
    folder = store.challenge_dir(le.cache_dir)
    path = folder / token
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o644)
    except OSError as exc:
        report.fail(f"cannot write a probe token into {folder}: {exc.strerror or exc}",
                    "run `elemta cert test` as the elemta user (or root)")
        return
    try:
        for address in addresses:
            url = f"http://{le.domain}:{http_addr.port}/.well-known/acme-challenge/{token}"
            try:
                status, body = _fetch_token(address, http_addr.port, le.domain, token, timeout)
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
        path.unlink(missing_ok=True)


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


def cert_test_main(config: Config, dry_run: bool, out: TextIO,
                   resolver: Resolver = resolve) -> int:
    """``elemta cert test``: diagnose step by step; exit 0 only when nothing failed."""
    report = Report(out)
    le = config.tls.letsencrypt
    report.ok(f"config {config.path or '(embedded)'} is valid")
    if not le.enabled:
        report.warn("[tls.letsencrypt] enabled = false: elemta will not obtain certificates "
                    "by itself")
    try:
        addresses = resolver(le.domain)
    except (OSError, UnicodeError) as exc:
        addresses = []
        report.fail(f"DNS: {le.domain} does not resolve: {exc}",
                    f"create an A (and/or AAAA) record for {le.domain} pointing at this server")
    if addresses:
        report.ok(f"DNS: {le.domain} resolves to {', '.join(addresses)}")
        local = [a for a in addresses if is_local_address(a)]
        if len(local) == len(addresses):
            report.ok(f"DNS: {', '.join(local)} {'is' if len(local) == 1 else 'are'} "
                      "this host's")
        elif local:
            others = [a for a in addresses if a not in local]
            report.warn(f"DNS: {', '.join(others)} {'is' if len(others) == 1 else 'are'} not "
                        "this host's: the CA may pick any of the addresses, so every one must "
                        "reach this server")
        else:
            report.warn(f"DNS: none of {', '.join(addresses)} is an address of this host: fine "
                        "behind NAT with port forwarding, otherwise fix the DNS record")
    check_http01(config, addresses, report)
    check_directory(le.acme_directory, report)
    refusal = wrong_user(le.cache_dir, f"elemta cert test --dry-run -c {config.path or 'PATH'}")
    if dry_run and refusal:
        report.fail("certbot --dry-run: not run as root", refusal.removeprefix("error: "))
    elif dry_run:
        if report.failed:
            report.skip("certbot --dry-run: fix the failures above first")
        else:
            try:
                argv = certonly_command(config, dry_run=True)
            except ValueError as exc:
                report.fail(f"certbot --dry-run: {exc}", "pass -c PATH")
            else:
                done = run_certbot(argv, config.tls.renewal.renewal_timeout)
                if done.ok:
                    report.ok("certbot --dry-run: a test certificate was issued (nothing saved)")
                else:
                    report.fail(f"certbot --dry-run failed: {done.reason}",
                                "read the reason above and certbot's log in "
                                f"{le.cache_dir / 'certbot' / 'logs'}")
    if report.failed:
        print(f"{report.failed} check(s) failed.", file=out)
        return EXIT_FAILURE
    print("all checks passed.", file=out)
    return EXIT_OK
