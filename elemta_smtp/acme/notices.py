"""Which notices are due: a pure function of the served certificate, the time
and the recorded state.

* Expiry: when the certificate has 30, 14, 7, 3 or 1 days left (and once it has
  expired), one notice per threshold per certificate, keyed by serial. A
  threshold counts only once the certificate is inside its renewal window, so
  a 45-day certificate that renews at 15 days left never warns "30 days left";
  when several thresholds are crossed at once (the daemon was down) only the
  most urgent is mailed and the others are recorded as done.
* Renewed: the served serial changed to a later certificate for the same names
  (whoever ran certbot: the daemon, ``elemta cert renew`` or a systemd timer).
* Events the manager recorded in the outbox: renewal failures, first issuance, and
  the first failure of a run of failed attempts to obtain one.
* DANE and key events, mailed once for good (``ONCE``: their id stays in ``sent``): a
  served key no published TLSA record matches, the next key of a staged rollover (the
  record to publish), a changed ``key_type`` that waits for a rollover.

``plan`` returns the notices and the state to save *before* mailing (it records
the serial seen and queues the "renewed" event); ``mark_sent`` records one
mailed notice. A notice that could not be mailed stays due at the next check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from elemta_smtp.acme.renewal import CertFacts, format_span, renewal_window
from elemta_smtp.cache.state import OUTBOX_LIMIT, Event, Seen, State
from elemta_smtp.config import NOTICE_THRESHOLDS

EXPIRED = 0  # the threshold key used once a certificate has expired
#: Event kinds mailed once for good: their id is recorded in ``sent`` when mailed, and the
#: manager queues no event whose id is there (``already_sent``).
ONCE = frozenset({"dane-mismatch", "dane-next-key", "key-type-change"})
DEFAULT_WHAT = "TLS certificate"


@dataclass(frozen=True)
class Notice:
    """One mail to send (and one log line to write)."""

    key: str
    kind: str  # "expiry" | "expired" | "renewed" | "renewal-failed" | "issued" | ONCE ...
    subject: str
    body: str
    marks: tuple[str, ...] = ()  # expiry keys recorded as sent once mailed
    event_id: str = ""  # outbox event removed once mailed

    @property
    def summary(self) -> str:
        return self.subject


@dataclass(frozen=True)
class Plan:
    state: State  # save this before mailing
    notices: tuple[Notice, ...]
    dropped: tuple[Event, ...] = ()  # outbox overflow: log these, they will not be mailed


def expiry_key(serial: str, threshold: int) -> str:
    return f"expiry:{serial}:{threshold}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def observe(cert: CertFacts | None, state: State) -> State:
    """Record the served certificate; queue a "renewed" event when its serial
    replaced an earlier certificate of the same names."""
    if cert is None or cert.is_bootstrap:
        return state
    seen = state.last_seen
    if seen is not None and seen.serial == cert.serial:
        return state
    outbox = state.outbox
    sent = state.sent
    if seen is not None and cert.not_after > seen.not_after and set(seen.names) & set(cert.names):
        event_id = f"renewed:{cert.serial}"
        if all(e.id != event_id for e in outbox):
            outbox = (*outbox, Event(id=event_id, kind="renewed", at=cert.not_before,
                                     names=cert.names, serial=cert.serial,
                                     old_serial=seen.serial, not_after=cert.not_after,
                                     old_not_after=seen.not_after))
        # expiry marks of the old certificate no longer matter
        sent = frozenset(k for k in sent if k.startswith(f"expiry:{cert.serial}:")
                         or not k.startswith("expiry:"))
    return replace(state, sent=sent, outbox=outbox,
                   last_seen=Seen(cert.serial, cert.not_after, cert.names))


def expiry_notice(cert: CertFacts, now: datetime, state: State,
                  renewal_days: int, auto_renew: bool = True) -> Notice | None:
    """The expiry notice due for ``cert`` now, if any."""
    if cert.is_bootstrap:
        return None
    remaining = cert.not_after - now
    window, _capped = renewal_window(renewal_days, cert.lifetime)
    crossed = [t for t in (*NOTICE_THRESHOLDS, EXPIRED)
               if remaining <= timedelta(days=t) and timedelta(days=t) <= window]
    if not crossed:
        return None
    threshold = min(crossed)
    key = expiry_key(cert.serial, threshold)
    if key in state.sent:
        return None
    names = ", ".join(cert.names)
    marks = tuple(expiry_key(cert.serial, t) for t in crossed)
    if auto_renew:
        advice = ("elemta renews it automatically ([tls.renewal] auto_renew = true) but has not "
                  "succeeded yet. Look at the daemon's log (journalctl -u elemta), run "
                  "`elemta cert test` to diagnose, and `elemta cert renew` to retry now.")
    else:
        advice = ("[tls.renewal] auto_renew = false, so elemta does not renew it itself: check "
                  "that your certbot renew timer runs (systemctl list-timers "
                  "elemta-certbot-renew.timer; journalctl -u elemta-certbot-renew), or run "
                  "`elemta cert renew` now. `elemta cert test` diagnoses DNS and HTTP-01.")
    facts = (f"Names: {names}\nSerial: {cert.serial}\nNot after: {_when(cert.not_after)}\n")
    if threshold == EXPIRED:
        return Notice(key=key, kind="expired", marks=marks,
                      subject=f"TLS certificate for {names} has EXPIRED",
                      body=(f"The TLS certificate elemta serves for {names} expired at "
                            f"{_when(cert.not_after)}. Mail clients and servers that check "
                            f"certificates will refuse it.\n\n{facts}\n{advice}\n"))
    left = format_span(remaining)
    return Notice(key=key, kind="expiry", marks=marks,
                  subject=f"TLS certificate for {names} expires in {threshold} "
                          f"day{'s' if threshold != 1 else ''} or less ({left} left)",
                  body=(f"The TLS certificate elemta serves for {names} expires at "
                        f"{_when(cert.not_after)}, {left} from now.\n\n{facts}\n{advice}\n"))


def already_sent(state: State, event_id: str) -> bool:
    """Was the once-only event ``event_id`` (``ONCE``) mailed already?"""
    return event_id in state.sent


def _once_notice(event: Event, names: str) -> tuple[str, str]:
    """Subject and body of the ``ONCE`` kinds; ``event.reason`` carries the details."""
    if event.kind == "dane-mismatch":
        key = f"{event.key} key" if event.key else "key"
        return (f"DANE: no TLSA record matches the {key} served for {names}",
                f"elemta serves the certificate serial {event.serial} for {names}, and DNS "
                f"publishes TLSA records for port 25 that do not match its key:\n\n"
                f"{event.reason}\n\nUntil a matching record is published (or the key the "
                "records name is served again), mail servers that validate DANE (RFC 7672) do "
                "not deliver mail here. This mail is sent once per key; `elemta cert info` "
                "shows the PROBLEM while it lasts.\n")
    if event.kind == "dane-next-key":
        return (f"DANE: publish the TLSA record of the next key for {names}",
                f"A staged TLSA rollover started for {names}. Add these records next to the "
                f"ones published now (keep those: the current key is served until the "
                f"rollover is finished):\n\n{event.reason}\n\nOnce DNS serves them (and "
                "their TTL has passed), run `elemta dane rollover finish`; it refuses while "
                "they are missing. `elemta dane status --check` shows what DNS has.\n")
    return (f"TLS certificate for {names}: key_type changed, start a DANE rollover",
            f"{event.reason}\n\nWith [tls.dane] enabled elemta never changes the key on its own "
            "(the published TLSA records would stop matching): run `elemta dane rollover "
            "start`, publish the record it prints, then `elemta dane rollover finish`.\n")


def event_notice(event: Event) -> Notice:
    """The mail for an outbox event."""
    names = ", ".join(event.names) or "the configured domain"
    if event.kind in ONCE:
        subject, body = _once_notice(event, names)
        return Notice(key=event.id, kind=event.kind, subject=subject, body=body,
                      marks=(event.id,), event_id=event.id)
    if event.kind == "renewed":
        subject = f"TLS certificate for {names} renewed"
        body = (f"elemta now serves a renewed certificate for {names}.\n\n"
                f"Old serial: {event.old_serial or 'unknown'} (not after "
                f"{_when(event.old_not_after)})\nNew serial: {event.serial} (not after "
                f"{_when(event.not_after)})\n\nNothing to do.\n")
    elif event.kind == "issued":
        subject = f"TLS certificate for {names} issued"
        body = (f"elemta obtained a certificate for {names} and serves it now.\n\n"
                f"Serial: {event.serial}\nNot after: {_when(event.not_after)}\n\n"
                "Nothing to do: elemta renews it before it expires.\n")
    elif event.kind == "acquire-failed":
        subject = f"Could not obtain a TLS certificate for {names}"
        body = (f"elemta could not obtain a certificate for {names} at {_when(event.at)}, so it "
                "serves its self-signed bootstrap certificate: mail still flows over STARTTLS, "
                "but clients that verify certificates will not trust it.\n\n"
                f"Reason (from certbot):\n{event.reason or 'unknown'}\n\n"
                "elemta keeps trying with growing pauses (minutes, then hours) and mails "
                "again when a certificate is issued. To diagnose run `elemta cert test`: "
                "DNS, port 80 reachability and the ACME directory are the usual causes. "
                "certbot's log is under <cache_dir>/certbot/logs/letsencrypt.log.\n")
    else:
        subject = f"TLS certificate renewal for {names} FAILED"
        current = (f"The certificate served now (serial {event.serial}) expires at "
                   f"{_when(event.not_after)}.\n" if event.serial else "")
        body = (f"Renewing the certificate for {names} failed at {_when(event.at)}.\n\n"
                f"Reason (from certbot):\n{event.reason or 'unknown'}\n\n{current}"
                "elemta tries again later. To diagnose run `elemta cert test`; to retry "
                "now run `elemta cert renew`. certbot's log is under "
                "<cache_dir>/certbot/logs/letsencrypt.log.\n")
    return Notice(key=event.id, kind=event.kind, subject=subject, body=body, event_id=event.id)


def add_event(state: State, event: Event) -> State:
    """Queue an event for mailing (ids are unique: a repeated id is ignored)."""
    if any(e.id == event.id for e in state.outbox):
        return state
    return replace(state, outbox=(*state.outbox, event))


def relabel(notice: Notice, what: str) -> Notice:
    """The notice about another certificate of the same names ("RSA TLS certificate")."""
    if what == DEFAULT_WHAT:
        return notice
    return replace(notice, subject=notice.subject.replace(DEFAULT_WHAT, what),
                   body=notice.body.replace(DEFAULT_WHAT, what))


def plan(cert: CertFacts | None, now: datetime, state: State, renewal_days: int,
         auto_renew: bool = True, *, what: str = DEFAULT_WHAT) -> Plan:
    """Everything due now: outbox events first (oldest first), then the expiry notice;
    ``what`` names the certificate in the mails (another one than live/<domain>.pem)."""
    state = observe(cert, state)
    dropped: tuple[Event, ...] = ()
    if len(state.outbox) > OUTBOX_LIMIT:
        dropped = state.outbox[:-OUTBOX_LIMIT]
        state = replace(state, outbox=state.outbox[-OUTBOX_LIMIT:])
    notices = [event_notice(e) for e in state.outbox]
    if cert is not None:
        expiry = expiry_notice(cert, now, state, renewal_days, auto_renew)
        if expiry is not None:
            notices.append(expiry)
    return Plan(state=state, notices=tuple(relabel(n, what) for n in notices), dropped=dropped)


def mark_sent(state: State, notice: Notice) -> State:
    """The state once ``notice`` has been mailed."""
    outbox = tuple(e for e in state.outbox if e.id != notice.event_id) if notice.event_id \
        else state.outbox
    return replace(state, sent=state.sent | frozenset(notice.marks), outbox=outbox)
