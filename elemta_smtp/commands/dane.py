"""``elemta dane status [--check]``, ``elemta dane rollover start`` and ``elemta dane rollover
finish [--force]``: the TLSA records of the keys served (and of the next ones during a
staged rollover), and the rollover itself.

A rollover never leaves the served key unpublished: ``start`` makes the next key (kept in
the cache, 0600) and prints its record to add next to the current one; ``finish`` refuses
while DNS does not publish it, then renews with it (acme/rollover.py) and prints the record
that can go.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import TextIO

from elemta_smtp.acme.blocking import run_blocking
from elemta_smtp.acme.dane import key_value, record_line
from elemta_smtp.acme.danekeys import SlotKeys, all_slot_keys, reuse_warning
from elemta_smtp.acme.rollover import RolloverError, next_key_in_lineage, put_back_interrupted
from elemta_smtp.acme.runner import certonly_command
from elemta_smtp.acme.slots import KEY_WORDS, Slot, slots
from elemta_smtp.cache import dane as store
from elemta_smtp.cache.layout import swapped_key_path
from elemta_smtp.cache.lineages import certbot_user, lineage_for
from elemta_smtp.commands.cert_renew import EXIT_FAILURE, EXIT_OK, cached_certificate, renew_slot
from elemta_smtp.config import Config
from elemta_smtp.daemon import Reload, live_pid, reload_daemon
from elemta_smtp.errors import ElemtaError

EXIT_USAGE = 2


def _lookup(resolver: str | None, hosts: Sequence[str]
            ) -> dict[str, tuple[tuple[str, ...], str | None]]:
    from elemta_smtp.acme import danecheck  # noqa: PLC0415  (dnspython only when asked)

    return danecheck.lookup_tlsa(resolver, hosts)


def _mark(value: str, found: tuple[tuple[str, ...], str | None] | None) -> str:
    if found is None:
        return ""
    values, error = found
    if error is not None:
        return f"  [FAILED: {error}]"
    return "  [present]" if value in values else "  [MISSING]"


def _title(keys: SlotKeys, config: Config) -> str:
    path = keys.path or keys.slot.live_path(config.tls.letsencrypt.cache_dir)
    key = f"{keys.key} key" if keys.key else f"{KEY_WORDS[keys.slot.key_type]} key, none served"
    return f"{keys.slot.domain} ({key}, {path})"


def dane_status_main(config: Config, out: TextIO, check: bool = False,
                     resolver: str | None = None) -> int:
    """Print each certificate's current and next TLSA records (with ``check``: whether DNS
    publishes each; exit 1 when one that must be published is missing)."""
    le = config.tls.letsencrypt
    resolver = resolver or config.tls.dane.resolver or None
    missing = checked = 0
    for keys in all_slot_keys(config):
        print(_title(keys, config), file=out)
        try:
            found = _lookup(resolver, keys.hosts) if check else {}
        except ValueError as exc:
            print(f"error: {exc}", file=out)
            return EXIT_USAGE
        rows = [("current", keys.current, "the key served")] if keys.current else []
        if keys.next:
            started = keys.rollover.started.strftime("%Y-%m-%d %H:%M UTC") if keys.rollover else "?"
            rows.append(("next", keys.next, f"rollover started {started}: publish it, then "
                                            "`elemta dane rollover finish`"))
        retired = keys.rollover.retired if keys.rollover else ""
        if retired and retired not in (keys.current, keys.next):
            rows.append(("retired", retired, "no longer served: its record can be removed"))
        if keys.problem:
            print(f"  not served: {keys.problem}", file=out)
        elif not keys.current:
            print("  no certificate served yet", file=out)
        for label, value, note in rows if keys.hosts else []:
            for host in keys.hosts:
                mark = _mark(value, found.get(host)) if check else ""
                missing += label != "retired" and mark.strip() not in ("", "[present]")
                checked += label != "retired"
                print(f"  {label + ':':<9}{record_line(host, value)}{mark}", file=out)
            print(f"  {'':<9}; {note}", file=out)
        if not keys.hosts:
            print("  no MX name of [mta_sts] mx is on this certificate: no TLSA record needed",
                  file=out)
        lineage = lineage_for(le.cache_dir, (le.domain,), keys.slot.cert_name, keys.slot.variant)
        warning = reuse_warning(lineage) if config.tls.dane.enabled else None
        if warning:
            print(f"  WARNING: {warning}", file=out)
        print("", file=out)
    if not le.enabled:
        print("NOTE: [tls.letsencrypt] enabled = false: the key is the one in the files you "
              "manage; publish a new key's record next to the current one before you replace "
              "them", file=out)
    elif not config.tls.dane.enabled:
        print("NOTE: [tls.dane] enabled = false: every renewal makes a new key (and needs a new "
              "record first); set it to true to keep keys", file=out)
    if check and not checked:
        print("; nothing to check: no key is served yet", file=out)
        return EXIT_FAILURE
    if check:
        print(f"; {'all records present' if not missing else f'{missing} record(s) not published'}",
              file=out)
    return EXIT_FAILURE if missing else EXIT_OK


def _needs_dane(config: Config, out: TextIO) -> bool:
    """Is a rollover impossible with this configuration? (Said in one sentence.)"""
    if not config.tls.letsencrypt.enabled:
        print("error: a staged rollover renews elemta's own certificate from the ACME CA, but "
              "[tls.letsencrypt] enabled = false: with a certificate you manage ([tls] "
              "cert_file), publish the new key's TLSA record next to the current one "
              "(`elemta dane status` prints it), wait for its TTL, then replace the files "
              "and remove the old record.", file=out)
        return True
    if config.tls.dane.enabled:
        return False
    print("error: [tls.dane] enabled = false: without it every renewal makes a new key anyway. "
          "Set [tls.dane] enabled = true in elemta.toml (and reload elemta) first.", file=out)
    return True


def _tell_daemon(config: Config, out: TextIO) -> None:
    """The daemon mails the next key's records at its next check; SIGHUP makes that now."""
    if live_pid(config.server.pid_file) is None:
        print("elemta is not running: it mails these records when it starts", file=out)
        return
    try:
        outcome, pid = reload_daemon(config.server.pid_file)
    except ElemtaError as exc:
        print(f"could not signal the daemon ({exc}); it mails the records at its next check",
              file=out)
        return
    if outcome is Reload.SIGNALLED:
        print(f"the daemon (pid {pid}) mails these records to [notify] recipients", file=out)


def rollover_start_main(config: Config, out: TextIO) -> int:
    """Make the next key of each certificate (or keep the one made already) and print the
    records to add next to the current ones."""
    if _needs_dane(config, out):
        return EXIT_FAILURE
    le = config.tls.letsencrypt
    now = datetime.now(timezone.utc)
    for found in all_slot_keys(config):
        slot, keys = found.slot, found
        if found.next:
            print(f"{_title(keys, config)}: a rollover is already under way; its next key:",
                  file=out)
        else:
            pem = store.make_key(slot.key_type)
            path = store.write_next_key(le.cache_dir, slot.domain, slot.variant, pem)
            value = key_value(store.load_key(pem, path).public_key())
            rollover = store.Rollover(now, found.current, value, slot.key_type)
            keys = replace(found, next=value, rollover=rollover)
            store.write_rollover(le.cache_dir, slot.domain, slot.variant, rollover)
            print(f"{_title(keys, config)}: made the next key ({KEY_WORDS[slot.key_type]}) in "
                  f"{path}", file=out)
        print("Publish these records (the current key's stay until the rollover is finished):",
              file=out)
        for host in keys.hosts:
            if keys.current:
                print(f"  {record_line(host, keys.current)}    ; current key, keep", file=out)
            print(f"  {record_line(host, keys.next)}    ; next key, ADD", file=out)
        print("", file=out)
    print("Once DNS serves them (wait for their TTL), run `elemta dane rollover finish`; "
          "`elemta dane status --check` shows what DNS has.", file=out)
    _tell_daemon(config, out)
    return EXIT_OK


def rollover_finish_main(config: Config, out: TextIO, force: bool = False,
                         resolver: str | None = None) -> int:
    """Renew each certificate with its next key, once DNS publishes the next key's record
    (``force``: without looking); print the records that can go."""
    if _needs_dane(config, out):
        return EXIT_FAILURE
    resolver = resolver or config.tls.dane.resolver or None
    for slot in slots(config):
        try:
            restored = put_back_interrupted(config.tls.letsencrypt.cache_dir, slot.domain,
                                            slot.variant)
        except RolloverError as exc:
            print(f"error: {exc}", file=out)
            return EXIT_FAILURE
        if restored is not None:
            print(f"put certbot's own key back into {restored}: the previous `elemta dane "
                  "rollover finish` was interrupted", file=out)
    pending = [k for k in all_slot_keys(config) if k.next]
    if not pending:
        print("error: no rollover is under way: start one with `elemta dane rollover start`",
              file=out)
        return EXIT_FAILURE
    if not force:
        try:
            unpublished = _unpublished(pending, resolver)
        except ValueError as exc:
            print(f"error: {exc}", file=out)
            return EXIT_USAGE
        if unpublished:
            lines = "\n".join(f"  {line}" for line in unpublished)
            print("refused: DNS does not publish the TLSA record of the next key yet, so serving "
                  "it would make mail servers that validate DANE refuse this host. Add\n"
                  f"{lines}\nnext to the current record(s), wait for the TTL, and run `elemta "
                  "dane rollover finish` again (--force skips this check).", file=out)
            return EXIT_FAILURE
    status = EXIT_OK
    with _signals_end_the_block():
        for keys in pending:
            status = max(status, _finish(config, keys, out))
    return status


@contextmanager
def _signals_end_the_block() -> Iterator[None]:
    """SIGTERM and SIGHUP (systemd, `timeout`, a closed terminal) end the block like an
    exception, so that certbot's lineage gets its own key back before the process ends."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _unpublished(pending: Sequence[SlotKeys], resolver: str | None) -> list[str]:
    """The next-key records DNS does not answer (a failed lookup counts: nothing is known)."""
    lines = []
    for keys in pending:
        for host, (values, error) in _lookup(resolver, keys.hosts).items():
            if keys.next not in values:
                why = f"    ; lookup failed: {error}" if error else ""
                lines.append(record_line(host, keys.next) + why)
    return lines


def _finish(config: Config, keys: SlotKeys, out: TextIO) -> int:
    le = config.tls.letsencrypt
    slot = keys.slot
    pem = store.read_next_key(le.cache_dir, slot.domain, slot.variant)
    assert pem is not None
    installed = cached_certificate(config, slot)
    lineage = lineage_for(le.cache_dir, installed.names if installed else (le.domain,),
                          slot.cert_name, slot.variant)
    print(f"{_title(keys, config)}: renewing with the next key", file=out)
    if not lineage.renewal_conf.is_file() and not _first_certificate(config, slot, out):
        return EXIT_FAILURE
    key_args = ["--key-type", store.key_type_of(pem)]
    try:
        with next_key_in_lineage(lineage, pem, swapped_key_path(le.cache_dir, slot.domain,
                                                                  slot.variant)):
            status = renew_slot(config, slot, out, key_args=key_args, rollover=True)
    except (RolloverError, ElemtaError) as exc:
        print(f"error: {exc}", file=out)
        return EXIT_FAILURE
    after = cached_certificate(config, slot)
    if after is None or f"3 1 1 {after.spki_sha256}" != keys.next:
        print("error: the certificate installed does not have the next key; the rollover stays "
              "under way (the next key is kept): look at the output above, then try again",
              file=out)
        return EXIT_FAILURE
    store.remove_next_key(le.cache_dir, slot.domain, slot.variant)
    started = keys.rollover.started if keys.rollover else datetime.now(timezone.utc)
    store.write_rollover(le.cache_dir, slot.domain, slot.variant, store.Rollover(
        started, keys.current, keys.next, slot.key_type, datetime.now(timezone.utc),
        keys.current))
    print(f"the next key is served now (TLSA {keys.next})", file=out)
    if keys.current and keys.current != keys.next:
        print("These records can now be removed from DNS (the old key is no longer served):",
              file=out)
        for host in keys.hosts:
            print(f"  {record_line(host, keys.current)}", file=out)
    return status


def _first_certificate(config: Config, slot: Slot, out: TextIO) -> bool:
    """A slot without a lineage (the RSA certificate of "ecdsa+rsa" with DANE): create the
    lineage without installing its certificate (its random key is never served), so that
    the renewal with the next key can follow."""
    print(f"certbot has no lineage {slot.cert_name} yet: creating it first (not installed, "
          "not served)", file=out)
    argv = certonly_command(config, lineage_name=slot.cert_name, key_type=slot.key_type,
                            install=False)
    done = run_blocking(argv, config.tls.renewal.renewal_timeout,
                        user=certbot_user(lineage_for(config.tls.letsencrypt.cache_dir, (),
                                                      slot.cert_name, slot.variant)))
    if not done.ok:
        print(f"error: certbot could not obtain the first {slot.what}: {done.reason}", file=out)
        return False
    return True
