"""Is a renewal due, and the cap for short-lived certificates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from elemta_smtp.acme.renewal import (
    CertFacts,
    cap_sentence,
    config_check_sentence,
    config_warnings,
    decide_renewal,
    format_span,
    renewal_window,
    retry_delay,
)
from elemta_smtp.config import parse_config

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def cert(days: float, serial: str = "0a") -> CertFacts:
    return CertFacts(serial=serial, not_before=T0, not_after=T0 + timedelta(days=days),
                     names=("mail.example.com",))


@pytest.mark.parametrize(("lifetime", "renewal_days", "window", "capped"), [
    pytest.param(90, 30, 30, False, id="90d-at-30-uncapped"),
    pytest.param(90, 31, 30, True, id="90d-at-31-capped-to-30"),
    pytest.param(45, 30, 15, True, id="45d-capped-to-15"),
    pytest.param(6, 30, 2, True, id="6d-capped-to-2"),
    pytest.param(6, 1, 1, False, id="6d-at-1-uncapped"),
    pytest.param(6, 365, 2, True, id="6d-at-365-capped"),
])
def test_window_is_capped_at_a_third_of_the_lifetime(lifetime: int, renewal_days: int,
                                                      window: float, capped: bool) -> None:
    """The renewal window is renewal_days, or a third of the lifetime if that is shorter."""
    assert renewal_window(renewal_days, timedelta(days=lifetime)) == (timedelta(days=window), capped)


def test_broken_lifetime_is_not_capped() -> None:
    """A certificate whose not_after is before not_before keeps the configured window."""
    assert renewal_window(30, timedelta(days=-1)) == (timedelta(days=30), False)


@pytest.mark.parametrize(("age_days", "due"), [
    pytest.param(0, False, id="fresh"),
    pytest.param(59.9, False, id="just-before-window"),
    pytest.param(60, True, id="at-window"),
    pytest.param(89, True, id="last-day"),
    pytest.param(91, True, id="expired"),
])
def test_due_when_inside_window(age_days: float, due: bool) -> None:
    """A 90-day certificate with renewal_days = 30 is due from 30 days left on."""
    decision = decide_renewal(cert(90), T0 + timedelta(days=age_days), 30)
    assert decision.due is due


def test_short_lived_certificate_does_not_loop() -> None:
    """A fresh 6-day certificate is not due even with renewal_days = 30: no renewal loop."""
    decision = decide_renewal(cert(6), T0 + timedelta(minutes=1), 30)
    assert not decision.due
    assert decision.capped
    assert decision.next_due == timedelta(days=4) - timedelta(minutes=1)


def test_next_due_is_zero_when_due() -> None:
    """next_due never goes negative."""
    assert decide_renewal(cert(90), T0 + timedelta(days=80), 30).next_due == timedelta(0)


def test_cap_sentence_names_both_numbers() -> None:
    """The log sentence says the configured days, the lifetime and the window used."""
    text = cap_sentence(30, timedelta(days=45))
    assert text is not None
    assert "renewal_days = 30" in text and "45 days" in text and "15 days are left" in text
    assert cap_sentence(30, timedelta(days=90)) is None


def test_config_check_sentence() -> None:
    """config check explains the cap only when it shortens renewal_days for the CA's lifetime."""
    text = config_check_sentence(40, "Let's Encrypt", 90)
    assert text == ("[tls.renewal] renewal_days = 40 is more than a third of the 90-day lifetime of "
                    "Let's Encrypt's certificates: elemta renews them when 30 days are left (a window "
                    "as long as the lifetime would renew at every check)")
    assert config_check_sentence(30, "Let's Encrypt", 90) is None


@pytest.mark.parametrize(("toml", "notes"), [
    pytest.param("", 0, id="example-defaults-lets-encrypt"),
    pytest.param("staging = true\n", 0, id="staging-defaults"),
    pytest.param("[tls.renewal]\nrenewal_days = 31\n", 1, id="lets-encrypt-capped"),
    pytest.param('directory_url = "https://ca.example/dir"\n[tls.renewal]\nrenewal_days = 60\n', 0,
                 id="unknown-ca"),
    pytest.param("[tls.renewal]\nrenewal_days = 60\nauto_renew = false\n", 0, id="no-auto-renew"),
])
def test_config_warnings_only_when_the_cap_changes_something(toml: str, notes: int) -> None:
    """The note is printed only when auto-renewing from a CA whose lifetime elemta knows
    (Let's Encrypt: 90 days) with renewal_days above a third of it; the defaults say nothing."""
    config = parse_config('[tls.letsencrypt]\nenabled = true\nemail = "a@example.com"\n' + toml)
    assert len(config_warnings(config)) == notes


@pytest.mark.parametrize(("span", "text"), [
    pytest.param(timedelta(days=2, hours=3), "2 days 3 hours", id="days-hours"),
    pytest.param(timedelta(days=1), "1 day", id="one-day"),
    pytest.param(timedelta(hours=1, minutes=5), "1 hour 5 minutes", id="hours-minutes"),
    pytest.param(timedelta(seconds=40), "40 seconds", id="seconds"),
    pytest.param(-timedelta(hours=2), "-2 hours", id="negative"),
])
def test_format_span(span: timedelta, text: str) -> None:
    """Spans read like a person writes them."""
    assert format_span(span) == text


def test_covers_wildcard_one_label() -> None:
    """A wildcard name covers exactly one extra label."""
    c = CertFacts("1", T0, T0, ("*.example.com",))
    assert c.covers("mail.example.com")
    assert not c.covers("a.mail.example.com")
    assert not c.covers("example.com")


@pytest.mark.parametrize(("failures", "seconds"), [
    pytest.param(0, 0, id="none"),
    pytest.param(1, 120, id="first-within-minutes"),
    pytest.param(2, 240, id="doubles"),
    pytest.param(5, 1920, id="half-hour"),
    pytest.param(8, 15360, id="hours"),
    pytest.param(9, 6 * 3600, id="capped-at-6h"),
    pytest.param(1000, 6 * 3600, id="never-overflows"),
])
def test_retry_delay(failures: int, seconds: float) -> None:
    """Failed runs are retried after growing waits: minutes first, hours later, never 0."""
    assert retry_delay(failures) == seconds
