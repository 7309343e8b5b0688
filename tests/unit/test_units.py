"""The value parsers behind elemta.toml: durations, sizes, listen addresses."""

from __future__ import annotations

import errno
import os
from datetime import timedelta

import pytest

from elemta_smtp.units import (
    Address,
    bind_hosts,
    listen_failure,
    parse_address,
    parse_duration,
    parse_size,
    time_left,
    whole_days,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("12h", 43200), ("24h", 86400), ("1d", 86400),
     ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), (" 5M ", 300)],
    ids=str,
)
def test_duration_accepted(text: str, seconds: float) -> None:
    """Durations with units turn into seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "5 minutes", "m5", "5m x", "-5m", 300, True, None],
                         ids=repr)
def test_duration_refused(value: object) -> None:
    """Anything but a number with a unit is refused, with the allowed forms named."""
    with pytest.raises(ValueError, match="90s"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [("25MB", 25_000_000), ("25 MB", 25_000_000), ("512KiB", 524_288), ("1GiB", 1 << 30),
     (10_240, 10_240), ("2048", 2048), ("1.5MB", 1_500_000), ("10kb", 10_000)],
    ids=str,
)
def test_size_accepted(value: object, size: int) -> None:
    """Sizes are plain bytes or use SI (KB, MB) or binary (KiB, MiB) units."""
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["25 furlongs", "MB", "", -1, True, 1.5, "ten"], ids=repr)
def test_size_refused(value: object) -> None:
    """Sizes with unknown units or the wrong type are refused."""
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "address"),
    [(":25", Address("", 25)), ("127.0.0.1:2525", Address("127.0.0.1", 2525)),
     ("[::1]:465", Address("::1", 465)), ("[::]:25", Address("::", 25)),
     ("0.0.0.0:0", Address("0.0.0.0", 0))],
    ids=str,
)
def test_address_accepted(text: str, address: Address) -> None:
    """The three documented address forms parse."""
    assert parse_address(text) == address


@pytest.mark.parametrize(
    "text",
    ["25", "::1:465", "[127.0.0.1]:25", "localhost:25", "127.0.0.1:99999", "127.0.0.1:", "[::1]465",
     "1.2.3:25"],
    ids=repr,
)
def test_address_refused(text: str) -> None:
    """Names, bare ports, unbracketed IPv6 and bad ports are refused with the allowed forms."""
    with pytest.raises(ValueError, match=r'":25"'):
        parse_address(text)


def test_address_str_round_trips() -> None:
    """An address prints in the form it is written in."""
    assert str(parse_address("[::1]:465")) == "[::1]:465"
    assert str(parse_address("127.0.0.1:25")) == "127.0.0.1:25"


@pytest.mark.parametrize(("host", "expected"), [
    pytest.param("", "127.0.0.1", id="any"),
    pytest.param("0.0.0.0", "127.0.0.1", id="any4"),
    pytest.param("::", "::1", id="any6"),
    pytest.param("0:0::0", "::1", id="any6-long"),
    pytest.param("192.0.2.1", "192.0.2.1", id="specific"),
])
def test_connect_host(host: str, expected: str) -> None:
    """Wildcard listen addresses are checked through loopback."""
    assert Address(host, 80).connect_host == expected


@pytest.mark.parametrize(("span", "text"), [
    pytest.param(timedelta(days=30, hours=1), "30 days left", id="30-days-and-an-hour"),
    pytest.param(timedelta(days=29, hours=23), "29 days left", id="just-under-30-days"),
    pytest.param(timedelta(days=1, hours=12), "1 day left", id="one-day"),
    pytest.param(timedelta(hours=5, minutes=3), "5 hours 3 minutes left", id="under-a-day"),
    pytest.param(-timedelta(hours=3), "expired 3 hours ago", id="expired-hours-ago"),
    pytest.param(-timedelta(days=1, hours=12), "expired 1 day ago", id="expired-a-day-and-a-half-ago"),
    pytest.param(-timedelta(days=2, seconds=1), "expired 2 days ago", id="expired-just-over-2-days-ago"),
    pytest.param(-timedelta(days=2, hours=23), "expired 2 days ago", id="expired-almost-3-days-ago"),
])
def test_time_left_reads_like_a_person_writes_it(span: timedelta, text: str) -> None:
    """Days left are whole days rounded toward zero on both sides; an expired certificate
    reads "expired N days ago", never "-N days left"."""
    assert time_left(span) == text


@pytest.mark.parametrize(("span", "days"), [
    (timedelta(days=29, hours=23), 29), (timedelta(hours=23), 0), (-timedelta(hours=23), 0),
    (-timedelta(days=1, hours=12), -1), (-timedelta(days=2, seconds=1), -2),
], ids=str)
def test_whole_days_round_toward_zero(span: timedelta, days: int) -> None:
    """Whole days round toward zero, before and after expiry alike."""
    assert whole_days(span) == days


@pytest.mark.parametrize(("code", "why"), [
    pytest.param(errno.EADDRINUSE, "the port is already in use by another program (see `ss -ltnp`)",
                 id="EADDRINUSE"),
    pytest.param(errno.EACCES, "permission denied: ports below 1024 need root or "
                 "CAP_NET_BIND_SERVICE", id="EACCES"),
    pytest.param(errno.EADDRNOTAVAIL, "that IP address is not on this host", id="EADDRNOTAVAIL"),
    pytest.param(errno.ENOBUFS, os.strerror(errno.ENOBUFS), id="other"),
])
def test_listen_failure_words_the_errno(code: int, why: str) -> None:
    """A failed bind reads "cannot listen for WHAT on ADDRESS: why", the same for the daemon
    and the certbot plugin."""
    text = listen_failure("SMTP", Address("127.0.0.1", 25), OSError(code, os.strerror(code)))
    assert text == f"cannot listen for SMTP on 127.0.0.1:25: {why}"


def test_bind_hosts() -> None:
    """Every address is the IPv6 wildcard first (dual stack), IPv4 only as the fallback."""
    assert bind_hosts(Address("", 25)) == ("::", "0.0.0.0")
    assert bind_hosts(Address("::1", 25)) == ("::1",)
    assert bind_hosts(Address("127.0.0.1", 25)) == ("127.0.0.1",)
