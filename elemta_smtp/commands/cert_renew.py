"""``elemta cert renew [--if-due]``: renew the certificate's lineage where it lives, print
old and new serial and not-after, and make sure the running daemon serves it."""

from __future__ import annotations

import contextlib
import time
from typing import TextIO

from elemta_smtp.acme.blocking import run_blocking
from elemta_smtp.acme.runner import cert_name, renew_command
from elemta_smtp.cache import layout, live
from elemta_smtp.cache.lineages import certbot_user, current_user, lineage_for, renewal_blocker
from elemta_smtp.config import Config
from elemta_smtp.daemon import live_pid, reload_daemon
from elemta_smtp.errors import CacheError, ElemtaError
from elemta_smtp.tls.probe import probe_daemon_serial

EXIT_OK = 0
EXIT_FAILURE = 1


def cached_certificate(config: Config) -> live.Installed | None:
    """The certificate in ``live/<domain>.pem``, or None when there is none or it is unreadable."""
    le = config.tls.letsencrypt
    try:
        return live.read_installed(layout.certificate_path(le.cache_dir, le.domain))
    except (CacheError, OSError):  # InvalidCertificate and InvalidName are CacheErrors
        return None


def cert_renew_main(config: Config, out: TextIO, if_due: bool = False) -> int:
    """``elemta cert renew``: force a renewal now (with ``if_due``: let certbot decide, as
    the packaged timer does), print old and new serial and not-after, and make sure the
    running daemon serves the new certificate. The lineage is renewed where the installer
    recorded it, as the owner of its folders when run as root."""
    le = config.tls.letsencrypt
    old = cached_certificate(config)
    lineage = lineage_for(le.cache_dir, old.names if old else (le.domain,), cert_name(config))
    if old is None:
        print(f"no certificate for {le.domain} in {le.cache_dir / 'live'} yet", file=out)
    else:
        print(f"current: serial {old.serial}, not after {old.not_after.isoformat()}", file=out)
    if not lineage.renewal_conf.is_file():
        print(f"error: certbot has no certificate named {lineage.cert_name} in "
              f"{lineage.config_dir} to renew. With [tls.letsencrypt] enabled = true, "
              "`elemta serve` obtains one at start; run `elemta cert test` to see what stops it.",
              file=out)
        return EXIT_FAILURE
    runas = certbot_user(lineage)
    if runas is None:
        blocker = renewal_blocker(lineage, current_user(), cache_dir=le.cache_dir,
                                  domain=le.domain, config_path=config.path)
        if blocker:
            print(f"error: {blocker}", file=out)
            return EXIT_FAILURE
    who = f" as {runas.name}" if runas else ""
    what = "checking" if if_due else "renewing"
    print(f"{what} {lineage.cert_name} in {lineage.config_dir} with certbot{who} (up to "
          f"{config.tls.renewal.renewal_timeout:g}s)...", file=out)
    done = run_blocking(renew_command(config, lineage, force=not if_due),
                        config.tls.renewal.renewal_timeout, user=runas)
    if not done.ok:
        print(f"error: renewal failed: {done.reason}", file=out)
        print("the old certificate is still served; run `elemta cert test` to diagnose", file=out)
        return EXIT_FAILURE
    new = cached_certificate(config)
    if if_due and old is not None and new is not None and new.serial == old.serial:
        print("not renewed: certbot says it is not due yet", file=out)
        return EXIT_OK
    if new is None or (old is not None and new.serial == old.serial):
        print(f"error: certbot succeeded but {layout.certificate_path(le.cache_dir, le.domain)} "
              "was not updated: is the elemta installer recorded in certbot's renewal "
              f"config ({lineage.renewal_conf})?", file=out)
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
            with contextlib.suppress(ElemtaError):
                reload_daemon(config.server.pid_file)
    print(f"warning: the daemon (pid {pid}) still serves serial {served_serial(config)}; "
          "look at its log for a rejected certificate, then `systemctl reload elemta`", file=out)
    return EXIT_FAILURE
