"""A once-only notice in a cluster (DANE mismatch): mailed once per cluster through the
claim; when what it warned about is over, the claim is given back, so a later breakage is
mailed again (the claim would otherwise hold for NOTICE_TTL, 400 days)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from twisted.internet.defer import Deferred

from elemta_smtp.acme.notifier import Notifier
from elemta_smtp.cache.state import Event
from tests.unit.test_manager import FakeClaims, FakeMailer

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
KEY = "dane-mismatch:3 1 1 c4d2"


def send(notifier: Notifier) -> None:
    """One notice step; the fakes answer at once, so it is done when this returns."""
    done = Deferred.fromCoroutine(notifier.send_due(None, NOW, 30, True))
    assert done.called


def mismatch() -> Event:
    return Event(id=KEY, kind="dane-mismatch", at=NOW, names=("mail.example.com",),
                 serial="0a", reason="no record matches")


def test_a_fixed_then_broken_again_mismatch_is_mailed_again_in_a_cluster(tmp_path: Path) -> None:
    """Mailed once; forget (a matching record is back) releases the cluster claim; a new
    breakage is queued and mailed again."""
    claims, mailer = FakeClaims(), FakeMailer()
    notifier = Notifier(tmp_path / "state.json", mailer, claims)
    notifier.load()
    assert notifier.add_once(mismatch())
    send(notifier)
    assert mailer.kinds == ["dane-mismatch"]
    assert not notifier.add_once(mismatch())  # once per key while it lasts
    notifier.forget(KEY)
    assert claims.released == [KEY]
    assert notifier.add_once(mismatch())
    send(notifier)
    assert mailer.kinds == ["dane-mismatch", "dane-mismatch"]


def test_forgetting_a_notice_never_mailed_releases_nothing(tmp_path: Path) -> None:
    """forget of an id not sent changes nothing, in the state or in Redis."""
    claims = FakeClaims()
    notifier = Notifier(tmp_path / "state.json", FakeMailer(), claims)
    notifier.load()
    notifier.forget(KEY)
    assert claims.released == []
