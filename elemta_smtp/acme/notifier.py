"""The notice step of every certificate check: decide what is due (``notices.plan``,
pure), save the state before mailing, mail each notice, record what went. A notice that
cannot be mailed stays in ``state.json`` and is tried again at the next check; a restart
never mails a notice twice. In a cluster each notice is claimed first (``Claims``), so it is
mailed by one node, not by every node."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from elemta_smtp.acme import notices
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.cache.state import Event, State, load_state, save_state
from elemta_smtp.errors import CacheError

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics

log = Logger(namespace="elemta.acme")

#: Notices that mean something needs doing; logged as warnings.
URGENT = frozenset({"expiry", "expired", "renewal-failed", "acquire-failed", "dane-mismatch",
                    "dane-next-key", "key-type-change"})


class NoticeMailer(Protocol):
    @property
    def recipients(self) -> tuple[str, ...]: ...

    def send(self, notice: notices.Notice, now: datetime) -> Deferred[None]: ...


class Claims(Protocol):
    """Who mails a notice in a cluster (``cluster.claims.NoticeClaims``)."""

    def claim(self, key: str) -> Deferred[bool | None]:
        """True: this node; False: another node; None: cannot tell now (try again later)."""
    def release(self, key: str) -> Deferred[None]: ...


class Notifier:
    """The notice state (``state.json``) and the mailing of what is due."""

    def __init__(self, state_file: Path, mailer: NoticeMailer,
                 claims: Claims | None = None, metrics: Metrics | None = None,
                 what: str = notices.DEFAULT_WHAT) -> None:
        self._state_file = state_file
        self._mailer = mailer
        self._claims = claims
        self._metrics = metrics
        self._what = what
        self.state = State()

    def load(self) -> None:
        self.state = load_state(self._state_file)

    def add(self, event: Event) -> None:
        """Queue an event (issued, renewal failed ...) for the next ``send_due``."""
        self.state = notices.add_event(self.state, event)

    def add_once(self, event: Event) -> bool:
        """Queue a once-only event (``notices.ONCE``) unless it was mailed already; True when
        it is new."""
        if notices.already_sent(self.state, event.id) or \
                any(e.id == event.id for e in self.state.outbox):
            return False
        self.add(event)
        return True

    def forget(self, event_id: str) -> None:
        """Let the once-only event ``event_id`` be mailed again (what it warned about is over)."""
        if event_id in self.state.sent:
            self.state = replace(self.state, sent=self.state.sent - {event_id})
            self._save()
            if self._claims is not None:  # in a cluster the claim is what stops a second mail
                self._claims.release(event_id).addErrback(
                    lambda f: log.failure("cluster: cannot give notice {key} back", failure=f,
                                          key=event_id))

    def _save(self) -> bool:
        try:
            save_state(self._state_file, self.state)
        except CacheError as exc:
            log.error("cannot write {path}: {error}; notices may be mailed again after a "
                      "restart", path=str(self._state_file), error=str(exc))
            return False
        return True

    async def send_due(self, facts: CertFacts | None, now: datetime, renewal_days: int,
                       auto_renew: bool) -> int:
        """Mail every notice due for ``facts`` at ``now``; returns how many were due."""
        planned = notices.plan(facts, now, self.state, renewal_days, auto_renew, what=self._what)
        for event in planned.dropped:
            log.error("too many unsent notices: dropping {id} ({kind}) without mailing it",
                      id=event.id, kind=event.kind)
        changed = planned.state != self.state
        self.state = planned.state
        if changed:
            self._save()
        recipients = self._mailer.recipients
        for notice in planned.notices:
            if self._claims is not None:
                mine = await self._claims.claim(notice.key)
                if mine is None:  # Redis unreachable: nobody can tell who mails it; later
                    continue
                if not mine:  # another node mails it
                    self.state = notices.mark_sent(self.state, notice)
                    self._save()
                    continue
            (log.warn if notice.kind in URGENT else log.info)(
                "notice: {subject}", subject=notice.subject, kind=notice.kind, key=notice.key)
            if not recipients:
                log.warn("notice not mailed: no [notify] recipients and no [tls.letsencrypt] "
                         "email are set; this log line is the only notice")
            else:
                try:
                    await self._mailer.send(notice, now)
                except Exception as exc:  # every failure is retried
                    if self._metrics is not None:
                        self._metrics.notices_failed.labels(notice.kind).inc()
                    log.error("could not mail notice \"{subject}\": {reason}; retrying at the "
                              "next check", subject=notice.subject,
                              reason=getattr(exc, "reason", None) or str(exc))
                    if self._claims is not None:  # another node may do better meanwhile
                        await self._claims.release(notice.key)
                    continue
                if self._metrics is not None:
                    self._metrics.notices_sent.labels(notice.kind).inc()
                log.info("mailed notice \"{subject}\" to {to}", subject=notice.subject,
                         to=", ".join(recipients))
            self.state = notices.mark_sent(self.state, notice)
            self._save()
        return len(planned.notices)
