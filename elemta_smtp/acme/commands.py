"""``elemta cert renew`` and ``elemta cert test``: the functions behind the commands.

Both run outside the daemon, synchronously; certbot runs as a child in its own
process group and is killed (with the group) at ``renewal_timeout``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from elemta_smtp.acme.runner import renew_command
from elemta_smtp.config import Config
from elemta_smtp.pidfile import live_pid
from elemta_smtp.tls import store
from elemta_smtp.tls.bundle import serial_hex
from elemta_smtp.tls.probe import probe_daemon_serial

EXIT_OK = 0
EXIT_FAILURE = 1



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
    pid = live_pid(config.server.pid_file)
    if pid is None:
        print("the daemon is not running; it serves the new certificate when it starts", file=out)
        return EXIT_OK
    def served_serial(config: Config) -> str | None:
        probe = probe_daemon_serial(config, server_name=le.domain, timeout=3.0)
        return probe.serial_hex if probe else None

    for attempt in range(2):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if served_serial(config) == new.serial:
                print(f"the daemon (pid {pid}) serves serial {new.serial}", file=out)
                return EXIT_OK
            time.sleep(0.2)
        if attempt == 0:  # the installer's SIGHUP did not take (yet): send one ourselves
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGHUP)
    print(f"warning: the daemon (pid {pid}) still serves serial {served_serial(config)}; "
          "look at its log for a rejected certificate, then `systemctl reload elemta`", file=out)
    return EXIT_FAILURE
