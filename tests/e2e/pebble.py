"""A real ACME CA for end-to-end tests: Pebble + pebble-challtestsrv on free
127.0.0.1 ports, and certbot pointed at it.

    with running_pebble(tmp_path / "pebble", http_port=setup.http_port) as pebble:
        pebble.certbot("certonly", "-a", "elemta", "-d", "mail.example.com", ...)
        ssl_context.load_verify_locations(cadata=pebble.root_pem.decode())

Every name resolves to 127.0.0.1 (challtestsrv's default A record, no AAAA), and
Pebble validates HTTP-01 by connecting to ``127.0.0.1:<http_port>``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
EMAIL = "admin@example.com"
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
CERTBOT_MAIN = "import sys; from certbot.main import main; sys.exit(main())"


def missing_binaries() -> str | None:
    """Why Pebble cannot run here (a sentence), or None when it can."""
    for binary in (PEBBLE, CHALLTESTSRV):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing: install Debian's pebble package (apt-get install -y pebble)"
    return None


def certbot_command(*args: str) -> list[str]:
    """certbot of the interpreter running the tests (``python -m certbot`` has no __main__)."""
    return [sys.executable, "-c", CERTBOT_MAIN, *args]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_api_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and, signed by it, Pebble's HTTPS cert for 127.0.0.1/localhost.
    Returns (ca.pem for REQUESTS_CA_BUNDLE, cert.pem, key.pem)."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elemta tests: Pebble API CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "api-ca.pem", folder / "api-cert.pem", folder / "api-key.pem")
    paths[0].write_bytes(_pem(ca))
    paths[1].write_bytes(_pem(cert))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Pebble:
    """A running Pebble: where it is, what to trust, and certbot pointed at it."""

    workdir: Path
    directory_url: str
    management_url: str
    http_port: int
    ca_bundle: Path          # trust this to talk to Pebble's API (REQUESTS_CA_BUNDLE)
    tls_port: int = 0        # where Pebble validates TLS-ALPN-01
    dns_management_url: str = ""  # pebble-challtestsrv's management API (set-txt, add-a)
    root_pem: bytes = b""    # the root of the chains Pebble issues: verify served certs with it
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def root_path(self) -> Path:
        """``root_pem`` as a file (for ``ssl`` contexts and ``openssl -CAfile``)."""
        return self.workdir / "issuing-root.pem"

    def certbot_dirs(self, certbot_dir: Path | None = None) -> dict[str, Path]:
        base = certbot_dir or self.workdir / "certbot"
        return {"config": base / "config", "work": base / "work", "logs": base / "logs"}

    def certbot(self, *args: str, env: Mapping[str, str] | None = None,
                certbot_dir: Path | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run certbot against this Pebble, non-interactively, with its dirs under
        ``certbot_dir`` (default: <workdir>/certbot). Raises with certbot's output
        when it fails and ``check`` is set."""
        dirs = self.certbot_dirs(certbot_dir)
        command = certbot_command(
            *args,
            "--config-dir", str(dirs["config"]), "--work-dir", str(dirs["work"]),
            "--logs-dir", str(dirs["logs"]), "--server", self.directory_url,
            "--agree-tos", "-m", EMAIL, "--non-interactive", "--no-eff-email",
            *(["--no-random-sleep-on-renew"] if args and args[0] == "renew" else []),
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(self.ca_bundle), **(env or {})},
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"certbot {' '.join(args)} exited {result.returncode}\n"
                                 f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    def set_txt(self, host: str, value: str) -> None:
        """Make pebble-challtestsrv's DNS answer a TXT record for ``host`` (fully qualified)."""
        request = urllib.request.Request(f"{self.dns_management_url}/set-txt", method="POST",
                                         data=json.dumps({"host": host, "value": value}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.status

    def live(self, name: str, certbot_dir: Path | None = None) -> Path:
        """certbot's live/<name>/ folder."""
        return self.certbot_dirs(certbot_dir)["config"] / "live" / name


def _https_get(url: str, context: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        data: bytes = response.read()
        return data


def _wait_tcp(name: str, port: int, process: subprocess.Popen[bytes], log: Path,
              timeout: float) -> None:
    """Block until ``process`` (called ``name`` in errors) accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n"
                               f"{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} does not listen on {port} after {timeout}s:\n"
                                   f"{log.read_text(errors='replace')}") from None
            time.sleep(0.05)


@contextmanager
def _process(command: list[str], log: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_pebble(workdir: Path, http_port: int, validity_seconds: int | None = None,
                   timeout: float = 20, *, tls_port: int | None = None,
                   dns_port: int | None = None) -> Iterator[Pebble]:
    """Start challtestsrv and Pebble; Pebble validates HTTP-01 on 127.0.0.1:``http_port`` and
    TLS-ALPN-01 on 127.0.0.1:``tls_port`` (default: a free port nothing listens on).
    ``validity_seconds`` sets the lifetime of issued certificates (Pebble's default: 5 years);
    ``dns_port`` is challtestsrv's DNS port (default: a free one). Both processes are stopped
    on exit."""
    reason = missing_binaries()
    if reason:
        raise RuntimeError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_bundle, cert, key = write_api_certificate(workdir)
    ports = {name: free_port() for name in ("acme", "management", "dns", "dns_management", "tls")}
    ports["tls"] = tls_port or ports["tls"]
    ports["dns"] = dns_port or ports["dns"]
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{ports['acme']}",
        "managementListenAddress": f"127.0.0.1:{ports['management']}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": http_port, "tlsPort": ports["tls"],
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
    }}
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    logs = {"challtestsrv": workdir / "challtestsrv.log", "pebble": workdir / "pebble.log"}
    pebble = Pebble(workdir=workdir, directory_url=f"https://127.0.0.1:{ports['acme']}/dir",
                    management_url=f"https://127.0.0.1:{ports['management']}",
                    http_port=http_port, ca_bundle=ca_bundle, tls_port=ports["tls"],
                    dns_management_url=f"http://127.0.0.1:{ports['dns_management']}", logs=logs)
    with ExitStack() as stack:
        dns = stack.enter_context(_process(
            [CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{ports['dns']}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{ports['dns_management']}"], logs["challtestsrv"], {}))
        _wait_tcp("pebble-challtestsrv", ports["dns_management"], dns, logs["challtestsrv"], timeout)
        server = stack.enter_context(_process(
            [PEBBLE, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{ports['dns']}"],
            logs["pebble"], PEBBLE_ENV))
        _wait_tcp("pebble", ports["acme"], server, logs["pebble"], timeout)
        context = ssl.create_default_context(cafile=str(ca_bundle))
        _https_get(pebble.directory_url, context)
        pebble.root_pem = _https_get(f"{pebble.management_url}/roots/0", context)
        pebble.root_path.write_bytes(pebble.root_pem)
        yield pebble

