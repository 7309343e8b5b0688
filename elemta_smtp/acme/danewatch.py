"""The DANE step of a certificate check (``[tls.dane] check_dns = true``): look up the
TLSA records of port 25 for each MX name the served certificate is presented for (off the
reactor thread: ``DaneWatch``) and compare them with its key. A key no published record
matches is a notice (log line + mail), once per key for as long as it lasts; a name with no
TLSA record at all is said once (not mailed: DANE senders then do not check)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from elemta_smtp.acme.dane import NameCheck, mismatch_sentence, mx_hosts, owner, record_line
from elemta_smtp.acme.notifier import Notifier
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.slots import KEY_WORDS, Slot
from elemta_smtp.cache.dane import read_rollover
from elemta_smtp.cache.state import Event
from elemta_smtp.config import Config

log = Logger(namespace="elemta.acme")


class DaneWatch(Protocol):
    """Looks up and compares the TLSA records for a served certificate (in a thread)."""

    def check(self, facts: CertFacts) -> Deferred[list[NameCheck]]: ...


def mismatch_id(facts: CertFacts) -> str:
    """The notice key: one per served key."""
    return f"dane-mismatch:{facts.tlsa.split()[-1] if facts.tlsa else facts.serial}"


class DaneStep:
    def __init__(self, config: Config, slot: Slot, watch: DaneWatch | None,
                 notifier: Notifier) -> None:
        self._config = config
        self._slot = slot
        self._watch = watch
        self._notifier = notifier
        self._said: set[str] = set()

    def announce(self, facts: CertFacts | None, now: datetime) -> None:
        """A staged rollover under way (``elemta dane rollover start``): mail the next key's
        records, once per next key (the command sends SIGHUP, so this runs at once)."""
        le = self._config.tls.letsencrypt
        rollover = read_rollover(le.cache_dir, self._slot.domain, self._slot.variant)
        if rollover is None or rollover.finished is not None or not rollover.next:
            return
        names = facts.names if facts is not None and not facts.is_bootstrap else le.names
        hosts = mx_hosts(self._config, names)
        lines = [f"  {record_line(h, rollover.current)}    ; current key, keep"
                 for h in hosts if rollover.current]
        lines += [f"  {record_line(h, rollover.next)}    ; next key, ADD" for h in hosts]
        if self._notifier.add_once(Event(
                id=f"dane-next-key:{rollover.next.split()[-1]}", kind="dane-next-key", at=now,
                names=tuple(names), serial=facts.serial if facts else "",
                reason="\n".join(lines) or "(no MX name of [mta_sts] mx is on the certificate)")):
            log.info("DANE: a staged rollover of the {what} for {domain} is under way; next key "
                     "{next}", what=self._slot.what, domain=self._slot.domain, next=rollover.next)

    @property
    def enabled(self) -> bool:
        return self._config.tls.dane.check_dns and self._watch is not None

    async def check(self, facts: CertFacts | None, now: datetime) -> list[NameCheck]:
        if not self.enabled or facts is None or facts.is_bootstrap or not facts.tlsa:
            return []
        assert self._watch is not None
        checks = await self._watch.check(facts)
        key = mismatch_id(facts)
        if any(c.mismatch for c in checks):
            sentence = mismatch_sentence(checks, facts.tlsa)
            if key not in self._said:
                self._said.add(key)
                log.warn("DANE: {sentence}", sentence=sentence[:1].upper() + sentence[1:])
            self._notifier.add_once(Event(id=key, kind="dane-mismatch", at=now,
                                          names=tuple(c.name for c in checks if c.mismatch),
                                          serial=facts.serial, reason=sentence,
                                          key=KEY_WORDS.get(facts.key_type, "")))
            return checks
        if any(c.matched for c in checks):
            self._notifier.forget(key)  # fixed: a later breakage of this key mails again
            if key in self._said:
                self._said.discard(key)
                log.info("DANE: the key served for {domain} matches the published TLSA "
                         "records again", domain=self._slot.domain)
        for check in checks:
            said = f"{key}:{check.name}"
            if check.error is not None:
                log.warn("DANE: cannot look up {owner} TLSA: {error}; checking again at the "
                         "next check", owner=owner(check.name), error=check.error)
            elif not check.found and said not in self._said:
                self._said.add(said)
                log.info("DANE: {owner} has no TLSA record, so senders do not use DANE for "
                         "{name}; `elemta dns records` prints the record to publish",
                         owner=owner(check.name), name=check.name)
        return checks
