"""Ask the running daemon which certificate it serves (for ``elemta cert info``).

Plain sockets and the stdlib ``ssl`` module: no Twisted, no reactor. No
verification is done: the point is only to read the served serial. ``socket`` and
``ssl`` are imported only when a daemon runs, so a report without one starts faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from elemta_smtp.config import Config
from elemta_smtp.daemon import live_pid
from elemta_smtp.units import Address

if TYPE_CHECKING:
    import socket


@dataclass(frozen=True)
class ProbeResult:
    """What the daemon served to one probe: ``serial`` or an ``error`` sentence."""

    pid: int
    address: str
    mode: str  # "implicit TLS" | "STARTTLS"
    server_name: str | None
    serial: int | None
    error: str | None = None

    @property
    def serial_hex(self) -> str | None:
        return None if self.serial is None else format(self.serial, "x")


def probe_target(config: Config) -> tuple[Address, str] | None:
    """Where to probe: the implicit TLS port, else STARTTLS on the plain port, else None."""
    tls = config.tls
    if tls.enabled and tls.listen_addr is not None:
        return tls.listen_addr, "implicit TLS"
    if tls.enabled and tls.enable_starttls and config.server.listen_addr is not None:
        return config.server.listen_addr, "STARTTLS"
    return None


#: TLS 1.2 suites that only a certificate of one key type can serve: a probe offering only
#: these sees the daemon's certificate of that type (key_type = "ecdsa+rsa" serves both).
SUITES_FOR = {"rsa": "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
              "ecdsa": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"}


def probe_daemon_serial(config: Config, server_name: str | None = None,
                        timeout: float = 5.0, key_type: str = "") -> ProbeResult | None:
    """If the daemon in ``[server] pid_file`` is alive, handshake with it and read the served
    serial (sending ``server_name`` as SNI; with ``key_type``, as a TLS 1.2 client that can
    only verify a certificate with that kind of key). None when no daemon runs or TLS is off."""
    pid = live_pid(config.server.pid_file)
    target = probe_target(config)
    if pid is None or target is None:
        return None
    address, mode = target
    host = address.connect_host
    where = f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    try:
        serial = _handshake(host, address.port, mode == "STARTTLS", server_name, timeout,
                            key_type=key_type)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return ProbeResult(pid, where, mode, server_name, None, f"cannot read the served certificate: {exc}")
    return ProbeResult(pid, where, mode, server_name, serial)


def _handshake(host: str, port: int, starttls: bool, server_name: str | None, timeout: float,
               *, key_type: str = "") -> int:
    import socket  # noqa: PLC0415  (see the module docstring)
    import ssl  # noqa: PLC0415

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if key_type in SUITES_FOR:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(SUITES_FOR[key_type])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        if starttls:
            _starttls(raw)
        with context.wrap_socket(raw, server_hostname=server_name or None) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the server sent no certificate")
    return x509.load_der_x509_certificate(der).serial_number


def _starttls(sock: socket.socket) -> None:
    buffer = b""

    def reply() -> tuple[int, bytes]:
        nonlocal buffer
        while True:
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if len(line) >= 4 and line[3:4] != b"-":
                    return int(line[:3]), line
            chunk = sock.recv(4096)
            if not chunk:
                raise ValueError("the server closed the connection before STARTTLS")
            buffer += chunk

    for command, expected in ((None, 220), (b"EHLO elemta-cert-info\r\n", 250), (b"STARTTLS\r\n", 220)):
        if command:
            sock.sendall(command)
        code, line = reply()
        if code != expected:
            raise ValueError(f"STARTTLS refused: {line.decode('ascii', 'replace').strip()}")
