"""The ARI step of a certificate check: ask the CA about the served certificate when its
``Retry-After`` has passed (off the reactor thread: ``AriSource``), keep the schedule in
``ari.json``, and say whether the CA's window makes the renewal due (``ari.decide``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from elemta_smtp.acme import ari, aristore
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.slots import Slot
from elemta_smtp.cache.layout import ari_path
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError

log = Logger(namespace="elemta.acme")


class AriSource(Protocol):
    """Fetches renewal information (``arifetch.fetch`` in a thread, in the daemon)."""

    def fetch(self, directory_url: str, ident: str, now: datetime) -> Deferred[ari.Answer]: ...


class AriStep:
    """The renewal schedule of one slot's certificate, as the CA suggests it."""

    def __init__(self, config: Config, slot: Slot, source: AriSource | None) -> None:
        self._config = config
        self._slot = slot
        self._source = source
        self._path = ari_path(config.tls.letsencrypt.cache_dir)
        self.schedule: ari.Schedule | None = None
        self._announced: set[tuple[str, ari.Window | None]] = set()
        self._unsupported_said = False

    def load(self) -> None:
        """Read the schedule kept from before a restart (a broken file: start afresh)."""
        try:
            self.schedule = aristore.load(self._path).get(self._slot.key)
        except ValueError as exc:
            log.warn("ignoring {path}: {error}; asking the CA again", path=str(self._path),
                     error=str(exc))

    async def decide(self, facts: CertFacts, now: datetime) -> ari.AriDecision:
        """Fetch if due, then: is the renewal due by the CA's window? Whatever goes wrong
        here, the days rule still decides (no decision by the CA), and the check goes on."""
        try:
            return await self._decide(facts, now)
        except Exception:  # the renewal must never depend on this step
            log.failure("the CA's renewal information (ARI) could not be used for {domain}; "
                        "renewing by [tls.renewal] renewal_days", domain=self._slot.domain)
            return ari.AriDecision(False, None, None)

    async def _decide(self, facts: CertFacts, now: datetime) -> ari.AriDecision:
        if self._source is None or not facts.ari_id:
            return ari.AriDecision(False, None, None)
        if ari.fetch_due(self.schedule, facts.ari_id, now):
            directory = self._config.tls.letsencrypt.acme_directory
            answer = await self._source.fetch(directory, facts.ari_id, now)
            self._said(answer, facts, directory)
            self.schedule = ari.update(self.schedule, facts.ari_id, answer)
            try:
                aristore.save(self._path, self._slot.key, self.schedule)
            except CacheError as exc:
                log.error("cannot write {path}: {error}; the renewal moment is drawn again "
                          "after a restart", path=str(self._path), error=str(exc))
        decision = ari.decide(self.schedule, facts.ari_id, now)
        self._announce(decision, facts)
        return decision

    def _said(self, answer: ari.Answer, facts: CertFacts, directory: str) -> None:
        if not answer.supported:
            if not self._unsupported_said:
                self._unsupported_said = True
                log.info("the CA ({directory}) offers no renewal information (ARI): the "
                         "{what} for {domain} is renewed by [tls.renewal] renewal_days",
                         directory=directory, what=self._slot.what, domain=self._slot.domain)
        elif answer.error:
            log.warn("cannot get the CA's renewal information (ARI) for the {what} for {domain} "
                     "(serial {serial}): {error}; asking again at {next}; meanwhile renewal_days "
                     "decides", what=self._slot.what, domain=self._slot.domain,
                     serial=facts.serial, error=answer.error, next=answer.next_fetch.isoformat())

    def _announce(self, decision: ari.AriDecision, facts: CertFacts) -> None:
        """One line per certificate and window: when the CA wants it renewed, and when."""
        window = decision.window
        if window is None or decision.moment is None or (facts.serial, window) in self._announced:
            return
        self._announced.add((facts.serial, window))
        why = f" ({window.explanation})" if window.explanation else ""
        log.info("the CA suggests renewing the {what} for {domain} (serial {serial}) between "
                 "{start} and {end}{why}: renewing at {moment} (ACME Renewal Information)",
                 what=self._slot.what, domain=self._slot.domain, serial=facts.serial,
                 start=window.start.isoformat(), end=window.end.isoformat(), why=why,
                 moment=decision.moment.isoformat())
