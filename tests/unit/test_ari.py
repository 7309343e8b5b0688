"""ACME Renewal Information (RFC 9773) decisions, pure: the certificate id, Retry-After,
the CA's document, the moment drawn once per window, and when a renewal is due."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from elemta_smtp.acme import ari, aristore
from tests.certs import make_ca, make_leaf

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WINDOW = ari.Window(T0 + timedelta(days=10), T0 + timedelta(days=12))


def test_serial_der_bytes_adds_a_sign_byte() -> None:
    """A serial whose high bit is set gets a leading zero byte, as in its DER INTEGER."""
    assert ari.serial_der_bytes(0x7F) == b"\x7f"
    assert ari.serial_der_bytes(0x80) == b"\x00\x80"
    assert ari.serial_der_bytes(0x0102) == b"\x01\x02"


def test_cert_id_is_aki_dot_serial() -> None:
    """RFC 9773 4.1's example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
    and serial 00:87:65:43:21 give "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"; no AKI: no id."""
    ca = make_ca()
    leaf = make_leaf(ca, ["mail.example.com"])
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = (x509.CertificateBuilder().subject_name(leaf.cert.subject)
            .issuer_name(ca.cert.subject).public_key(leaf.cert.public_key())
            .serial_number(0x87654321).not_valid_before(T0).not_valid_after(T0 + timedelta(days=9))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(ca.key, hashes.SHA256()))
    assert ari.cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert ari.cert_id(leaf.cert) is None  # the test CA's leaf has no AKI


def test_retry_after_is_clamped() -> None:
    """Retry-After below a minute counts as a minute, above a day as a day; absent: 6 hours."""
    assert ari.retry_after("5", T0) == timedelta(minutes=1)
    assert ari.retry_after("7200", T0) == timedelta(hours=2)
    assert ari.retry_after("999999", T0) == timedelta(days=1)
    assert ari.retry_after(None, T0) == timedelta(hours=6)
    assert ari.retry_after("Thu, 01 Jan 2026 03:00:00 GMT", T0) == timedelta(hours=3)


def test_parse_renewal_info() -> None:
    """The suggested window and Retry-After are read; a window ending before it starts is an
    error, retried after an hour."""
    body = (b'{"suggestedWindow": {"start": "2026-01-11T00:00:00Z", "end": "2026-01-13T00:00:00Z"},'
            b' "explanationURL": "https://ca.example/why"}')
    answer = ari.parse_renewal_info(body, {"retry-after": "3600"}, T0)
    assert answer.window == ari.Window(WINDOW.start, WINDOW.end, "https://ca.example/why")
    assert answer.next_fetch == T0 + timedelta(hours=1)
    broken = ari.parse_renewal_info(
        b'{"suggestedWindow": {"start": "2026-01-13T00:00:00Z", "end": "2026-01-11T00:00:00Z"}}',
        {}, T0)
    assert broken.window is None and "before it starts" in broken.error
    assert broken.next_fetch == T0 + ari.RETRY_ERROR
    assert ari.parse_renewal_info(b"nope", {}, T0).error.startswith("unreadable renewalInfo")


def test_moment_drawn_once_per_window() -> None:
    """The same window keeps its moment across fetches; a new window (the CA moved it) gets a
    new draw; a failed fetch keeps what was known."""
    first = ari.update(None, "id", ari.Answer(WINDOW, T0 + timedelta(hours=6)),
                       draw=lambda a, b: 0.25 * b)
    assert first.moment == WINDOW.start + timedelta(hours=12)
    again = ari.update(first, "id", ari.Answer(WINDOW, T0 + timedelta(hours=12)),
                       draw=lambda a, b: 0.0)
    assert again.moment == first.moment and again.next_fetch == T0 + timedelta(hours=12)
    failed = ari.update(again, "id", ari.Answer(None, T0 + timedelta(hours=13), error="503"))
    assert failed.moment == first.moment
    earlier = ari.Window(T0, T0 + timedelta(hours=1))
    moved = ari.update(failed, "id", ari.Answer(earlier, T0), draw=lambda a, b: 0.0)
    assert moved.moment == T0


def test_decide_due_once_moment_has_come() -> None:
    """Not due before the drawn moment, due from it on; nothing known: not due by ARI."""
    schedule = ari.update(None, "id", ari.Answer(WINDOW, T0), draw=lambda a, b: 3600.0)
    moment = WINDOW.start + timedelta(hours=1)
    assert not ari.decide(schedule, "id", moment - timedelta(seconds=1)).due
    assert ari.decide(schedule, "id", moment).due
    assert not ari.decide(schedule, "other-cert", moment).due
    assert not ari.decide(None, "id", moment).due
    assert ari.fetch_due(schedule, "id", T0) and not ari.fetch_due(schedule, "id", T0 - timedelta(1))
    assert ari.fetch_due(schedule, "other-cert", T0 - timedelta(1))


def test_schedule_survives_json() -> None:
    """A schedule written to ari.json reads back the same (the moment survives a restart)."""
    schedule = ari.update(None, "id", ari.Answer(WINDOW, T0), draw=lambda a, b: 10.0)
    assert ari.schedule_from_json(ari.schedule_to_json(schedule)) == schedule


NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def test_a_huge_retry_after_counts_as_a_day() -> None:
    """Retry-After of 40 digits, or an HTTP date in year 9999, is clamped, not an error."""
    assert ari.retry_after("9" * 40, NOW) == ari.RETRY_MAX
    assert ari.retry_after("Fri, 31 Dec 9999 23:59:59 -0500", NOW) in (ari.RETRY_MAX,
                                                                       ari.RETRY_DEFAULT)


def test_renewal_info_out_of_range_or_too_deep_is_unreadable_not_an_exception() -> None:
    """A window time out of range and JSON nested 100,000 deep are unreadable answers
    (asked again later), never an exception out of the parser."""
    out_of_range = (b'{"suggestedWindow": {"start": "9999-12-31T23:59:59-05:00", '
                    b'"end": "9999-12-31T23:59:59-05:00"}}')
    for body in (out_of_range, b"[" * 100_000):
        answer = ari.parse_renewal_info(body, {}, NOW)
        assert answer.window is None and answer.error.startswith("unreadable renewalInfo")
        assert answer.next_fetch == NOW + ari.RETRY_ERROR


def test_a_broken_ari_json_is_a_value_error_the_manager_ignores(tmp_path: Path) -> None:
    """ari.json with a time out of range or nested 100,000 deep: ``load`` raises ValueError
    (AriStep.load then warns and asks the CA again), nothing else (it stopped the daemon)."""
    path = tmp_path / "ari.json"
    for text in ('{"version": 1, "certificates": {"mail.example.com": {"cert_id": "x", '
                 '"next_fetch": "9999-12-31T23:59:59-05:00"}}}', "[" * 100_000):
        path.write_text(text)
        with pytest.raises(ValueError):
            aristore.load(path)
