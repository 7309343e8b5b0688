"""The certificate manager: a Twisted service that keeps a valid certificate
served and tells people about it.

Every check (at start, then every ``check_interval``, sooner while retrying):

1. No valid certificate for the domain is served: obtain one (``certbot
   certonly`` with the elemta plugin), retrying with backoff on failure.
2. ``auto_renew`` and the served certificate inside its renewal window: run
   ``certbot renew`` under ``renewal_timeout``; a failure is queued for mailing.
3. Notices: plan (pure, ``notices.plan``), save state, mail, record what went.

Renewal is due by ``renewal_days`` (``renewal.decide_renewal``) or by the CA's renewal
window (ARI, ``ariwatch.py``); with ``[tls.dane] check_dns`` the published TLSA records are
compared with the served key before the notices (``danewatch.py``). One manager looks
after one certificate (``slots.Slot``): with key_type = "ecdsa+rsa" the daemon runs two.

In a cluster (``[cluster] redis_url``) steps 1 and 2 run only under the cluster's issuance
lock (``coordinator``): a node that does not get it waits and looks again; one that gets it
checks again first, since another node's certificate may have arrived meanwhile.

Renewal runs before the notice check, so a healthy renewal never produces an
expiry warning. After a SIGHUP reload the daemon calls ``after_reload`` which
runs step 3 only: a renewal done by a systemd timer or ``elemta cert renew``
updates the state and mails "renewed" just the same.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from elemta_smtp.acme.ari import AriDecision
from elemta_smtp.acme.ariwatch import AriSource, AriStep
from elemta_smtp.acme.attempts import (
    CertCounts,
    Coordinator,
    IssuanceLock,
    RenewalAccess,
    Retry,
    Runner,
    one_line,
)
from elemta_smtp.acme.danewatch import DaneStep, DaneWatch
from elemta_smtp.acme.keywatch import KeyStep
from elemta_smtp.acme.notices import DEFAULT_WHAT
from elemta_smtp.acme.notifier import Claims, NoticeMailer, Notifier
from elemta_smtp.acme.renewal import (
    CertFacts,
    RenewalDecision,
    cap_sentence,
    decide_renewal,
    describe_served,
    format_span,
    mismatch_sentence,
    name_mismatch,
    not_installed,
    unchanged,
    why_renew,
)
from elemta_smtp.acme.runner import (
    Cancellable,
    Clock,
    RunResult,
    certonly_command,
    renew_command,
)
from elemta_smtp.acme.slots import KEY_WORDS, Slot, primary
from elemta_smtp.acme.turns import OneAtATime
from elemta_smtp.cache.layout import state_path
from elemta_smtp.cache.lineages import Lineage, User, current_user, lineage_for
from elemta_smtp.cache.state import Event
from elemta_smtp.config import Config

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics

log = Logger(namespace="elemta.acme")


class CertManager(Service):
    """Acquisition, renewal and notices for ``[tls.letsencrypt] domain``.

    ``served`` returns the facts of the certificate served for the domain (None or
    ``is_bootstrap`` when there is none); ``reload`` makes the TLS side re-read the
    cache, once, after certbot succeeds (the certbot the daemon runs does not signal it:
    ``daemon.DAEMON_PID_ENV``; a signal could land after the manager looks).
    """

    name = "certificate-manager"

    def __init__(self, config: Config, served: Callable[[], CertFacts | None], clock: Clock,
                 runner: Runner, mailer: NoticeMailer, *,
                 reload: Callable[[], object] | None = None,
                 python: str | None = None, user: User | None = None,
                 slot: Slot | None = None, ari: AriSource | None = None,
                 dane: DaneWatch | None = None,
                 coordinator: Coordinator | None = None, claims: Claims | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.slot = slot if slot is not None else primary(config)
        if self.slot.variant:  # a service name is unique among its parent's services
            self.name = f"certificate-manager-{self.slot.variant}"
        self._served = served
        self._clock = clock
        self._runner = runner
        self._mailer = mailer
        self._reload = reload
        self._python = python
        what = f"{KEY_WORDS[self.slot.key_type]} {DEFAULT_WHAT}" if self.slot.variant \
            else DEFAULT_WHAT
        self._notices = Notifier(state_path(config.tls.letsencrypt.cache_dir, self.slot.variant),
                                 mailer, claims, metrics, what)
        self._lock = IssuanceLock(coordinator, config.tls.letsencrypt.domain,
                                  config.tls.renewal.check_interval)
        self._ari = AriStep(config, self.slot, ari)
        self._dane = DaneStep(config, self.slot, dane, self._notices)
        self._keys = KeyStep(config, self.slot, self._notices)
        self._wake: float | None = None  # clock seconds: check again then (an ARI moment)
        self._counts = CertCounts(metrics, self.slot.cert_name)  # <domain>, <domain>-rsa
        self._next: Cancellable | None = None
        self._turns = OneAtATime()
        self._running: Deferred[RunResult] | None = None
        self._acquire = Retry()
        self._renew = Retry()
        self._force_next_acquire = False
        self._capped_logged: set[str] = set()
        self._mismatch_logged: set[str] = set()
        self._access = RenewalAccess(config, user if user is not None else current_user(),
                                     self.slot)

    # --- time ---

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), timezone.utc)

    # --- service ---

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._notices.load()
        self._ari.load()
        current = self._current()
        if current is not None and self.config.tls.renewal.auto_renew:
            self._renewal_blocked(current)  # said at start, not first at renewal time
        self._schedule(0)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._running is not None:
            self._running.cancel()
        busy = self._turns.busy
        return busy.addErrback(lambda _: None) if busy is not None else succeed(None)

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = self._clock.callLater(max(delay, 0.0), self.check)

    # --- entry points ---

    def check(self) -> Deferred[None]:
        """One full check now (acquire or renew, then notices); fires when done."""
        return self._turns.run(self._check, "certificate check")

    def after_reload(self) -> Deferred[None]:
        """Run the notice check for whatever is served now (the daemon calls this after
        SIGHUP). While a check runs, the notice check runs after it."""
        return self._turns.run(self._notify, "notice check", again=True)

    # --- the check ---

    def _current(self) -> CertFacts | None:
        """The certificate served for the domain if it is real, not expired, and has exactly
        the configured names (``[tls.letsencrypt] names``); a certificate whose names differ
        is replaced by a new one (said once per certificate)."""
        le = self.config.tls.letsencrypt
        facts = self._served()
        if facts is None or facts.is_bootstrap:
            return None
        if not facts.covers(le.domain) or facts.not_after <= self.now():
            return None
        missing, extra = name_mismatch(facts, le.names)
        if missing or extra:
            self._force_next_acquire = True  # certbot may hold a lineage with these names
            if facts.serial not in self._mismatch_logged:
                self._mismatch_logged.add(facts.serial)
                log.info("{sentence}: obtaining a new certificate for {names}",
                         sentence=mismatch_sentence(facts, missing, extra),
                         names=", ".join(le.names))
            return None
        return facts

    async def _check(self) -> None:
        interval = self.config.tls.renewal.check_interval
        next_delay = interval
        try:
            current = self._current()
            if current is None:
                wait = self._acquire.not_before - self._clock.seconds()
                if wait <= 0:
                    await self._obtain()
                    current = self._current()
                    wait = self._acquire.not_before - self._clock.seconds()
                if current is None:
                    next_delay = min(interval, max(wait, 1.0))
            elif self.config.tls.renewal.auto_renew:
                await self._maybe_renew(current)
            await self._dane.check(self._current(), self.now())
            await self._notify()
        finally:
            refused = self._lock.take_wait()
            if refused is not None:
                next_delay = min(interval, refused)
            wake, self._wake = self._wake, None
            if wake is not None:
                next_delay = min(next_delay, max(wake - self._clock.seconds(), 1.0))
            self._schedule(next_delay)

    def _run(self, argv: list[str]) -> Deferred[RunResult]:
        running = self._runner.run(argv, self.config.tls.renewal.renewal_timeout)
        self._running = running

        def clear(result: object) -> object:
            self._running = None
            return result

        return running.addBoth(clear)

    def _refresh(self) -> None:
        if self._reload is not None:
            self._reload()

    async def _obtain(self) -> None:
        permit = await self._lock.begin()
        if not permit.granted:
            return
        try:
            if self._current() is None:  # another node's certificate may have arrived
                await self._obtain_now()
        finally:
            await self._lock.end(permit)

    async def _obtain_now(self) -> None:
        le = self.config.tls.letsencrypt
        attempt = self._acquire.failures + 1
        log.info("obtaining a certificate for {names} from {server} (attempt {attempt})",
                 names=", ".join(le.names), server=le.acme_directory, attempt=attempt,
                 domain=le.domain)
        self._counts.attempt("acquisition")
        kwargs: dict[str, Any] = {"force": self._force_next_acquire}
        if self._python:
            kwargs["python"] = self._python
        if self._keys.rollover_first(self.now()):
            self._acquire.not_before = self._clock.seconds() + \
                self.config.tls.renewal.check_interval
            return
        try:
            argv = certonly_command(self.config, lineage_name=self.slot.cert_name,
                                    key_type=self.slot.key_type, **kwargs)
        except ValueError as exc:
            delay = self._acquire.failed(self._clock.seconds())
            self._counts.failure("acquisition", self._clock.seconds(), first=False)
            log.error("cannot obtain a certificate for {domain}: {reason}; retrying in {delay}",
                      domain=le.domain, reason=str(exc), delay=format_span(timedelta(seconds=delay)))
            return
        result = await self._run(argv)
        if result.ok:
            self._refresh()
            current = self._current()
            if current is not None:
                self._acquire.reset()
                self._force_next_acquire = False
                log.info("{what} for {domain} obtained: serial {serial}, valid until "
                         "{not_after}", what=self.slot.what, domain=le.domain, serial=current.serial,
                         not_after=current.not_after.isoformat())
                self._notices.add(Event(
                    id=f"issued:{current.serial}", kind="issued", at=self.now(),
                    names=current.names, serial=current.serial, not_after=current.not_after))
                return
            self._force_next_acquire = True
        reason = result.reason if not result.ok else not_installed(le.domain, le.cache_dir)
        delay = self._acquire.failed(self._clock.seconds())
        self._counts.failure("acquisition", self._clock.seconds(), first=False)
        if self._acquire.failures == 1:  # mailed once per run of failures, not at every retry
            self._notices.add(Event(
                id=f"acquire-failed:{le.domain}:{int(self._clock.seconds())}",
                kind="acquire-failed", at=self.now(), names=le.names, reason=reason))
        log.error("could not obtain a {what} for {domain}: {reason}; still serving {served}; "
                  "retrying in {delay} (certbot's log: {logs})", what=self.slot.what,
                  domain=le.domain, reason=one_line(reason), served=self._describe_served(),
                  delay=format_span(timedelta(seconds=delay)),
                  logs=str(le.cache_dir / "certbot" / "logs" / "letsencrypt.log"))

    async def _maybe_renew(self, current: CertFacts) -> None:
        renewal = self.config.tls.renewal
        now = self.now()
        decision = decide_renewal(current, now, renewal.renewal_days)
        if decision.capped and current.serial not in self._capped_logged:
            self._capped_logged.add(current.serial)
            sentence = cap_sentence(renewal.renewal_days, current.lifetime)
            log.info("{sentence}", sentence=sentence)
        by_ca = await self._ari.decide(current, now)
        if by_ca.moment is not None and not by_ca.due:
            self._wake = self._clock.seconds() + (by_ca.moment - now).total_seconds()
        key_args = self._keys.args(current, now)
        if not (decision.due or by_ca.due) or self._clock.seconds() < self._renew.not_before:
            return
        lineage = self._lineage(current)
        if self._renewal_blocked(current, lineage):
            return
        permit = await self._lock.begin()
        if not permit.granted:
            return
        try:
            after = self._current()  # another node may have renewed it meanwhile
            if after is not None and after.serial == current.serial:
                await self._renew_now(current, lineage, decision, by_ca, key_args)
        finally:
            await self._lock.end(permit)

    async def _renew_now(self, current: CertFacts, lineage: Lineage, decision: RenewalDecision,
                         by_ca: AriDecision, key_args: list[str]) -> None:
        renewal = self.config.tls.renewal
        now = self.now()
        domain = self.config.tls.letsencrypt.domain
        log.info("renewing the {what} for {domain} (serial {serial}): {why}", what=self.slot.what,
                 domain=domain, serial=current.serial, why=why_renew(decision, by_ca))
        kwargs: dict[str, Any] = {"python": self._python} if self._python else {}
        self._counts.attempt("renewal")
        if self._lock.shared and not lineage.renewal_conf.is_file():
            # a cluster node that never obtained this certificate itself has no lineage to
            # renew: it obtains a new certificate for the domain instead
            argv = certonly_command(self.config, force=True, lineage_name=self.slot.cert_name,
                                    key_type=self.slot.key_type, **kwargs)
        else:
            # certbot draws its own moment in the CA's window: when ours has come, force it
            argv = renew_command(self.config, lineage, force=by_ca.due, key_args=key_args,
                                 **kwargs)
        result = await self._run(argv)
        if result.ok:
            self._refresh()
            after = self._current()
            if after is not None and after.serial != current.serial:
                self._renew.reset()
                self._counts.renewed(self._clock.seconds())
                log.info("{what} for {domain} renewed: serial {old} -> {new}, valid until "
                         "{not_after}", what=self.slot.what, domain=domain, old=current.serial,
                         new=after.serial,
                         not_after=after.not_after.isoformat())
                return
        reason = result.reason if not result.ok else unchanged(lineage.cert_name,
                                                               lineage.config_dir)
        delay = self._renew.failed(self._clock.seconds(), at_least=renewal.check_interval)
        self._counts.failure("renewal", self._clock.seconds(), first=self._renew.failures == 1)
        log.error("renewal of the {what} for {domain} failed: {reason}; still serving serial "
                  "{serial} (expires {not_after}); next attempt in {delay}", what=self.slot.what,
                  domain=domain,
                  reason=one_line(reason), serial=current.serial,
                  not_after=current.not_after.isoformat(),
                  delay=format_span(timedelta(seconds=delay)))
        self._notices.add(Event(
            id=f"renewal-failed:{current.serial}:{int(self._clock.seconds())}",
            kind="renewal-failed", at=now, names=current.names, serial=current.serial,
            not_after=current.not_after, reason=reason))

    def _describe_served(self) -> str:
        return describe_served(self._served(), self.now(), self.config.tls.letsencrypt.domain)

    def _lineage(self, current: CertFacts) -> Lineage:
        """The certbot lineage the served certificate was installed from."""
        return lineage_for(self.config.tls.letsencrypt.cache_dir, current.names,
                           self.slot.cert_name, self.slot.variant)

    def _renewal_blocked(self, current: CertFacts, lineage: Lineage | None = None) -> bool:
        return self._access.blocked(current.serial, lineage or self._lineage(current))

    # --- notices ---

    async def _notify(self) -> None:
        """The notice step (notifier.py), then one line saying what was checked: a heartbeat
        an admin (and a test) can wait for after every check and every SIGHUP."""
        facts = self._served()
        renewal = self.config.tls.renewal
        self._dane.announce(facts, self.now())
        due = await self._notices.send_due(facts, self.now(), renewal.renewal_days,
                                           renewal.auto_renew)
        log.info("certificate check done: {served}; {due}", served=self._describe_served(),
                 due=f"{due} notice(s) due" if due else "no notice due")
