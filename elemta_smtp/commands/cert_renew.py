"""``elemta cert renew [--if-due]``: renew the certificate's lineage where it lives, print
old and new serial and not-after, and make sure the running daemon serves it (each
certificate of key_type = "ecdsa+rsa" in turn)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TextIO

from elemta_smtp.acme.blocking import run_blocking
from elemta_smtp.acme.rollover import RolloverError, put_back_interrupted
from elemta_smtp.acme.runner import key_change_args, renew_command
from elemta_smtp.acme.slots import KEY_WORDS, Slot, primary, slots
from elemta_smtp.cache import live
from elemta_smtp.cache.lineages import certbot_user, current_user, lineage_for, renewal_blocker
from elemta_smtp.config import Config
from elemta_smtp.daemon import live_pid, reload_daemon
from elemta_smtp.errors import CacheError, ElemtaError
from elemta_smtp.tls.probe import probe_daemon_serial

EXIT_OK = 0
EXIT_FAILURE = 1


def cached_certificate(config: Config, slot: Slot | None = None) -> live.Installed | None:
    """The certificate in ``live/<domain>.pem`` (the slot's live/ file), or None when there is
    none or it is unreadable."""
    slot = slot or primary(config)
    try:
        return live.read_installed(slot.live_path(config.tls.letsencrypt.cache_dir))
    except (CacheError, OSError):  # InvalidCertificate and InvalidName are CacheErrors
        return None


def cert_renew_main(config: Config, out: TextIO, if_due: bool = False) -> int:
    """``elemta cert renew``: force a renewal now (with ``if_due``: let certbot decide, as
    the packaged timer does), print old and new serial and not-after, and make sure the
    running daemon serves the new certificate. The lineage is renewed where the installer
    recorded it, as the owner of its folders when run as root. With [tls.dane] enabled the
    key is kept (certbot --reuse-key)."""
    status = EXIT_OK
    for slot in slots(config):
        status = max(status, renew_slot(config, slot, out, if_due=if_due))
    return status


def renew_slot(config: Config, slot: Slot, out: TextIO, *, if_due: bool = False,
               key_args: list[str] | None = None, rollover: bool = False) -> int:
    """``cert renew`` for one certificate (see ``cert_renew_main``); ``key_args`` replace the
    key options a changed key_type calls for. ``rollover``: called by ``elemta dane rollover
    finish`` with the next key in the lineage (it passes its own key options)."""
    le = config.tls.letsencrypt
    prefix = f"{KEY_WORDS[slot.key_type]} certificate: " if slot.is_companion else ""

    def say(line: str) -> None:
        print(f"{prefix}{line}", file=out)

    path = slot.live_path(le.cache_dir)
    try:  # a `dane rollover finish` killed while the next key was in certbot's lineage
        restored = None if rollover else put_back_interrupted(le.cache_dir, slot.domain,
                                                              slot.variant)
    except RolloverError as exc:
        say(f"error: {exc}")
        return EXIT_FAILURE
    if restored is not None:
        say(f"put certbot's own key back into {restored}: an interrupted `elemta dane rollover "
            "finish` had left the next key there")
    old = cached_certificate(config, slot)
    lineage = lineage_for(le.cache_dir, old.names if old else (le.domain,), slot.cert_name,
                          slot.variant)
    if old is None:
        say(f"no certificate for {le.domain} in {path} yet")
    else:
        say(f"current: serial {old.serial}, not after {old.not_after.isoformat()}")
    if slot.is_companion and config.tls.dane.enabled and old is None and not rollover:
        # its lineage may exist (a finish that failed after making it) with a key never
        # published: only a rollover brings this certificate
        say(f"nothing to renew: with [tls.dane] enabled the {slot.what} is obtained by a "
            "staged rollover (`elemta dane rollover start`, then `finish`), which publishes "
            "its key first")
        return EXIT_OK
    if not lineage.renewal_conf.is_file():
        if slot.is_companion and config.tls.dane.enabled:
            say(f"nothing to renew: with [tls.dane] enabled the {slot.what} is obtained by a "
                "staged rollover (`elemta dane rollover start`), which publishes its key first")
            return EXIT_OK
        say(f"error: certbot has no certificate named {lineage.cert_name} in "
            f"{lineage.config_dir} to renew. With [tls.letsencrypt] enabled = true, "
            "`elemta serve` obtains one at start; run `elemta cert test` to see what stops it.")
        return EXIT_FAILURE
    runas = certbot_user(lineage)
    if runas is None:
        blocker = renewal_blocker(lineage, current_user(), cache_dir=le.cache_dir,
                                  domain=le.domain, config_path=config.path)
        if blocker:
            say(f"error: {blocker}")
            return EXIT_FAILURE
    if key_args is None:
        key_args = key_change_args(slot.key_type, old.key_type if old else "",
                                   config.tls.dane.enabled)
        if key_args:
            say(f"key_type asks for {KEY_WORDS[slot.key_type]}: this renewal makes a new "
                f"{KEY_WORDS[slot.key_type]} key")
    who = f" as {runas.name}" if runas else ""
    what = "checking" if if_due else "renewing"
    say(f"{what} {lineage.cert_name} in {lineage.config_dir} with certbot{who} (up to "
        f"{config.tls.renewal.renewal_timeout:g}s)...")
    done = run_blocking(renew_command(config, lineage, force=not if_due, key_args=key_args),
                        config.tls.renewal.renewal_timeout, user=runas)
    if not done.ok:
        say(f"error: renewal failed: {done.reason}")
        say("the old certificate is still served; run `elemta cert test` to diagnose")
        return EXIT_FAILURE
    new = cached_certificate(config, slot)
    if if_due and old is not None and new is not None and new.serial == old.serial:
        say("not renewed: certbot says it is not due yet")
        return EXIT_OK
    if new is None or (old is not None and new.serial == old.serial):
        say(f"error: certbot succeeded but {path} was not updated: is the elemta installer "
            f"recorded in certbot's renewal config ({lineage.renewal_conf})?")
        return EXIT_FAILURE
    say(f"renewed: serial {old.serial if old else '-'} -> {new.serial}")
    say(f"not after: {old.not_after.isoformat() if old else '-'} -> {new.not_after.isoformat()}")
    if old is not None and old.spki_sha256 == new.spki_sha256:
        say(f"key kept: TLSA 3 1 1 {new.spki_sha256}")
    return _served(config, slot, new.serial, say)


def _served(config: Config, slot: Slot, serial: str, say: Callable[[str], None]) -> int:
    """Make sure the running daemon serves ``serial`` (a SIGHUP of our own when the
    installer's did not take)."""
    pid = live_pid(config.server.pid_file)
    if pid is None:
        say("the daemon is not running; it serves the new certificate when it starts")
        return EXIT_OK
    key_type = slot.key_type if len(config.tls.letsencrypt.key_types) > 1 else ""

    def served_serial() -> str | None:
        probe = probe_daemon_serial(config, server_name=slot.domain, timeout=3.0,
                                    key_type=key_type)
        return probe.serial_hex if probe else None

    for attempt in range(2):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if served_serial() == serial:
                say(f"the daemon (pid {pid}) serves serial {serial}")
                return EXIT_OK
            time.sleep(0.2)
        if attempt == 0:  # the installer's SIGHUP did not take (yet): send one ourselves
            with contextlib.suppress(ElemtaError):
                reload_daemon(config.server.pid_file)
    say(f"warning: the daemon (pid {pid}) still serves serial {served_serial()}; "
        "look at its log for a rejected certificate, then `systemctl reload elemta`")
    return EXIT_FAILURE
