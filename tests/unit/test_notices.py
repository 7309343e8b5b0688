"""Which notices are due, from the certificate, the time and the recorded state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from elemta_smtp.acme.notices import Notice, add_event, expiry_key, mark_sent, plan
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.cache.state import Event, State, load_state, save_state

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NAMES = ("mail.example.com",)


def cert(serial: str = "0a", days: float = 90, start: datetime = T0) -> CertFacts:
    return CertFacts(serial=serial, not_before=start, not_after=start + timedelta(days=days),
                     names=NAMES)


def left(c: CertFacts, days: float) -> datetime:
    """The moment ``c`` has ``days`` left."""
    return c.not_after - timedelta(days=days)


def deliver(c: CertFacts | None, now: datetime, state: State,
            renewal_days: int = 30) -> tuple[State, list[Notice]]:
    """One check where every mail goes out."""
    p = plan(c, now, state, renewal_days)
    state = p.state
    for notice in p.notices:
        state = mark_sent(state, notice)
    return state, list(p.notices)


@pytest.mark.parametrize("threshold", [30, 14, 7, 3, 1])
def test_each_threshold_fires_once(threshold: int) -> None:
    """Crossing a threshold mails one notice naming it; a second check mails nothing."""
    c = cert()
    state, _ = deliver(c, left(c, threshold + 0.5), State())
    state, notices = deliver(c, left(c, threshold - 0.01), state)
    assert [n.key for n in notices] == [expiry_key(c.serial, threshold)]
    assert f"expires in {threshold} day" in notices[0].subject
    _, again = deliver(c, left(c, threshold - 0.02), state)
    assert again == []


def test_walk_through_a_lifetime() -> None:
    """Checked every hour over a 90-day certificate's life: exactly 30, 14, 7, 3, 1 and expired."""
    c = cert()
    state = State()
    keys = []
    now = c.not_before
    while now < c.not_after + timedelta(days=2):
        state, notices = deliver(c, now, state)
        keys += [n.key for n in notices]
        now += timedelta(hours=1)
    assert keys == [expiry_key("0a", t) for t in (30, 14, 7, 3, 1, 0)]


def test_no_duplicates_across_restart(tmp_path: Path) -> None:
    """The state saved to state.json stops a restarted daemon from mailing the same threshold."""
    c = cert()
    path = tmp_path / "state.json"
    state, notices = deliver(c, left(c, 13), State())
    assert len(notices) == 1
    save_state(path, state)
    _, after_restart = deliver(c, left(c, 12), load_state(path))
    assert after_restart == []


def test_crossing_several_thresholds_mails_the_most_urgent_only() -> None:
    """After downtime at 5 days left, one "7 days" notice; 30 and 14 are recorded as done."""
    c = cert()
    state, notices = deliver(c, left(c, 5), State())
    assert [n.key for n in notices] == [expiry_key("0a", 7)]
    assert {expiry_key("0a", t) for t in (30, 14, 7)} <= state.sent
    _, later = deliver(c, left(c, 2.5), state)
    assert [n.key for n in later] == [expiry_key("0a", 3)]


def test_unsent_notice_stays_due() -> None:
    """A notice whose mail failed (not marked sent) is due again at the next check."""
    c = cert()
    first = plan(c, left(c, 6), State(), 30)
    second = plan(c, left(c, 5.9), first.state, 30)
    assert [n.key for n in second.notices] == [n.key for n in first.notices]


def test_short_lifetime_warns_only_inside_renewal_window() -> None:
    """A 45-day certificate (renews at 15 days) never warns "30 days left", but warns at 14."""
    c = cert(days=45)
    state, at_30 = deliver(c, left(c, 29), State())
    assert at_30 == []
    _, at_14 = deliver(c, left(c, 13.9), state)
    assert [n.key for n in at_14] == [expiry_key("0a", 14)]


def test_renewal_before_notice_means_no_alarm() -> None:
    """When the check sees the renewed certificate, it mails "renewed" and no expiry warning."""
    old = cert("0a")
    state, _ = deliver(old, left(old, 31), State())
    new = cert("0b", start=left(old, 30.5))
    state, notices = deliver(new, left(old, 29.9), state)
    assert [n.kind for n in notices] == ["renewed"]
    assert "0a" in notices[0].body and "0b" in notices[0].body
    _, again = deliver(new, left(old, 29.8), state)
    assert again == []


def test_renewal_by_a_timer_is_noticed_after_restart(tmp_path: Path) -> None:
    """A serial that changed while the daemon was down is mailed as "renewed" once."""
    path = tmp_path / "state.json"
    old = cert("0a")
    state, _ = deliver(old, left(old, 40), State())
    save_state(path, state)
    new = cert("0b", start=left(old, 30))
    state, notices = deliver(new, left(old, 29), load_state(path))
    assert [n.key for n in notices] == ["renewed:0b"]


def test_first_certificate_is_not_a_renewal() -> None:
    """With no certificate seen before, a served one is recorded and nothing is mailed."""
    state, notices = deliver(cert(), T0 + timedelta(days=1), State())
    assert notices == []
    assert state.last_seen is not None and state.last_seen.serial == "0a"


def test_bootstrap_certificate_gets_no_notices() -> None:
    """The self-signed stand-in neither warns nor counts as the last certificate seen."""
    boot = CertFacts("ff", T0, T0 + timedelta(days=1), NAMES, is_bootstrap=True)
    state, notices = deliver(boot, T0 + timedelta(hours=23), State())
    assert notices == [] and state.last_seen is None


def test_failure_event_is_mailed_with_reason_until_sent() -> None:
    """A renewal failure in the outbox is mailed with certbot's reason, then removed."""
    c = cert()
    event = Event(id="renewal-failed:1", kind="renewal-failed", at=left(c, 29), names=NAMES,
                  serial=c.serial, not_after=c.not_after, reason="Connection refused")
    state = add_event(add_event(State(), event), event)
    assert len(state.outbox) == 1
    failed = plan(c, left(c, 31), state, 30)
    assert [n.kind for n in failed.notices] == ["renewal-failed"]
    assert "Connection refused" in failed.notices[0].body
    assert "FAILED" in failed.notices[0].subject
    state = mark_sent(failed.state, failed.notices[0])
    assert state.outbox == ()


def test_issued_event() -> None:
    """An "issued" event reads as a certificate obtained."""
    c = cert()
    event = Event(id="issued:0a", kind="issued", at=T0, names=NAMES, serial="0a",
                  not_after=c.not_after)
    p = plan(c, T0, add_event(State(), event), 30)
    assert [n.subject for n in p.notices] == ["TLS certificate for mail.example.com issued"]


def test_outbox_overflow_is_reported() -> None:
    """Beyond the outbox limit the oldest events are returned as dropped, not lost silently."""
    state = State()
    for i in range(55):
        state = add_event(state, Event(id=f"renewal-failed:{i}", kind="renewal-failed", at=T0))
    p = plan(None, T0, state, 30)
    assert [e.id for e in p.dropped] == [f"renewal-failed:{i}" for i in range(5)]
    assert len(p.notices) == 50


def test_expired_certificate() -> None:
    """An expired certificate gets one "has EXPIRED" notice."""
    c = cert()
    state, _ = deliver(c, left(c, 0.5), State())
    _, notices = deliver(c, c.not_after + timedelta(hours=1), state)
    assert [n.kind for n in notices] == ["expired"]
    assert "EXPIRED" in notices[0].subject


@pytest.mark.parametrize(("auto_renew", "says", "not_says"), [
    pytest.param(True, "elemta renews it automatically", "auto_renew = false", id="auto-renew"),
    pytest.param(False, "systemctl list-timers elemta-certbot-renew.timer", "renews it automatically",
                 id="timer-renews"),
])
def test_expiry_mail_advice_fits_who_renews(auto_renew: bool, says: str, not_says: str) -> None:
    """The expiry mail tells the admin what to check: the daemon's renewal, or their own timer."""
    c = cert()
    (notice,) = plan(c, left(c, 13.5), State(), 30, auto_renew).notices
    assert notice.kind == "expiry"
    assert says in notice.body and not_says not in notice.body
    assert "`elemta cert renew`" in notice.body
