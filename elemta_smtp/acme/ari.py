"""ACME Renewal Information (ARI, RFC 9773): when the CA wants a certificate renewed.
Pure decisions on plain values, "now" and the random draw included.

* ``cert_id``: the certificate's ARI identifier, base64url(AKI keyIdentifier) "."
  base64url(serial number as the bytes of its DER INTEGER), no padding.
* ``parse_renewal_info``: the CA's answer (``suggestedWindow`` start/end, optional
  ``explanationURL``) and its ``Retry-After``, clamped to a minute .. a day (section 4.3).
* ``schedule``: a moment drawn uniformly inside the window, once per certificate and window
  (kept across checks and restarts; a new window, such as a CA moving renewals earlier
  before a mass revocation, gets a new draw); ``due`` once that moment has come.

The manager fetches the answer off the reactor thread (``arifetch.py``), keeps the
schedule in ``<cache_dir>/ari.json`` (``cache/arischedule.py``) and falls back to its days
rule (``renewal.decide_renewal``) when the CA offers no renewal information.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from cryptography import x509

#: Section 4.3: Retry-After below a minute counts as a minute, above a day as a day; absent or
#: unreadable, the next fetch is after six hours (what certbot does too).
RETRY_MIN = timedelta(minutes=1)
RETRY_MAX = timedelta(days=1)
RETRY_DEFAULT = timedelta(hours=6)
#: After a failed fetch (no answer, 5xx, a broken document): try again after this long.
RETRY_ERROR = timedelta(hours=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def serial_der_bytes(serial: int) -> bytes:
    """The content octets of ``serial`` as a DER INTEGER (two's complement, minimal: a
    leading zero byte when the high bit would be set)."""
    length = serial.bit_length() // 8 + 1
    return serial.to_bytes(length, "big", signed=True)


def cert_id(cert: x509.Certificate) -> str | None:
    """The ARI certificate identifier (RFC 9773 section 4.1), or None when the certificate has
    no authority key identifier (then the CA cannot be asked about it)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    return f"{_b64(aki.key_identifier)}.{_b64(serial_der_bytes(cert.serial_number))}"


@dataclass(frozen=True)
class Window:
    """The renewal window the CA suggests for one certificate."""

    start: datetime
    end: datetime
    explanation: str = ""  # the CA's explanationURL, if it gave one


@dataclass(frozen=True)
class Answer:
    """One fetch of a certificate's renewal information: the window (None: the CA has none,
    or the answer was unusable: ``error`` says why) and when to ask again."""

    window: Window | None
    next_fetch: datetime
    error: str = ""
    supported: bool = True  # False: the CA's directory has no renewalInfo


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time, got {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return parsed.astimezone(timezone.utc)


def retry_after(header: str | None, now: datetime) -> timedelta:
    """How long until the next fetch, from a ``Retry-After`` header (seconds or an HTTP date),
    clamped to RETRY_MIN .. RETRY_MAX; RETRY_DEFAULT when absent or unreadable."""
    if not header:
        return RETRY_DEFAULT
    text = header.strip()
    wait: timedelta | None = None
    if text.isdigit():  # more than a day in seconds counts as a day, however many digits
        wait = timedelta(seconds=int(text)) if len(text) <= 9 else RETRY_MAX
    else:
        try:
            when = parsedate_to_datetime(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            wait = when - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return RETRY_DEFAULT
    return min(max(wait, RETRY_MIN), RETRY_MAX)


def parse_renewal_info(body: bytes, headers: Mapping[str, str], now: datetime) -> Answer:
    """The CA's renewalInfo document (``{"suggestedWindow": {"start": ..., "end": ...}}``)
    and its headers; a window whose end is not after its start is unusable (section 4.2)."""
    next_fetch = now + retry_after(headers.get("retry-after") or headers.get("Retry-After"), now)
    try:
        doc = json.loads(body)
        window = doc["suggestedWindow"]
        start, end = _time(window["start"]), _time(window["end"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        # OverflowError: a time out of range; RecursionError: JSON nested too deep
        return Answer(None, now + RETRY_ERROR,
                      error=f"unreadable renewalInfo: {exc or type(exc).__name__}")
    if end <= start:
        return Answer(None, now + RETRY_ERROR,
                      error=f"the suggested window ends ({end.isoformat()}) before it starts "
                            f"({start.isoformat()})")
    explanation = doc.get("explanationURL", "")
    return Answer(Window(start, end, explanation if isinstance(explanation, str) else ""),
                  next_fetch)


@dataclass(frozen=True)
class Schedule:
    """What elemta knows about one certificate's renewal information."""

    cert_id: str
    next_fetch: datetime  # do not ask the CA again before this
    window: Window | None = None
    moment: datetime | None = None  # drawn once inside ``window``
    supported: bool = True  # False: the CA offers no renewal information


Draw = Callable[[float, float], float]


def draw_moment(window: Window, draw: Draw = random.uniform) -> datetime:
    """A moment uniformly inside ``window`` (section 4.2: spread the CA's load)."""
    span = (window.end - window.start).total_seconds()
    return window.start + timedelta(seconds=draw(0.0, span))


def update(previous: Schedule | None, ident: str, answer: Answer,
           draw: Draw = random.uniform) -> Schedule:
    """The schedule after a fetch: the same moment while the window is the same, a new draw
    for a new window; a failed fetch keeps what was known before."""
    known = previous if previous is not None and previous.cert_id == ident else None
    if answer.window is None:
        if known is not None and answer.supported:
            return replace(known, next_fetch=answer.next_fetch)
        return Schedule(ident, answer.next_fetch, supported=answer.supported)
    if known is not None and known.window == answer.window and known.moment is not None:
        return replace(known, next_fetch=answer.next_fetch, supported=True)
    return Schedule(ident, answer.next_fetch, answer.window, draw_moment(answer.window, draw))


def fetch_due(schedule: Schedule | None, ident: str, now: datetime) -> bool:
    """Should the CA be asked now about certificate ``ident``?"""
    return schedule is None or schedule.cert_id != ident or now >= schedule.next_fetch


@dataclass(frozen=True)
class AriDecision:
    """"Renew now?" by the CA's renewal information."""

    due: bool
    moment: datetime | None  # when it is due (None: the CA gave no window)
    window: Window | None


def decide(schedule: Schedule | None, ident: str, now: datetime) -> AriDecision:
    """Due once the drawn moment inside the CA's window has come (at once when the window
    is already past); nothing known for this certificate: not due by ARI."""
    if schedule is None or schedule.cert_id != ident or schedule.window is None \
            or schedule.moment is None:
        return AriDecision(False, None, None)
    return AriDecision(now >= schedule.moment, schedule.moment, schedule.window)


# --- the schedule as JSON (ari.json) ---

def schedule_to_json(schedule: Schedule) -> dict[str, object]:
    window = schedule.window
    return {
        "cert_id": schedule.cert_id,
        "next_fetch": schedule.next_fetch.isoformat(),
        "supported": schedule.supported,
        "window": None if window is None else {
            "start": window.start.isoformat(), "end": window.end.isoformat(),
            "explanation": window.explanation},
        "moment": schedule.moment.isoformat() if schedule.moment else None,
    }


def schedule_from_json(record: object) -> Schedule:
    """Raises ``ValueError`` (or ``KeyError``/``TypeError``) for a broken record."""
    if not isinstance(record, dict):
        raise ValueError(f"expected an object, got {record!r}")
    raw_window = record.get("window")
    window = None
    if raw_window is not None:
        window = Window(_time(raw_window["start"]), _time(raw_window["end"]),
                        str(raw_window.get("explanation", "")))
    moment = record.get("moment")
    return Schedule(str(record["cert_id"]), _time(record["next_fetch"]), window,
                    _time(moment) if moment is not None else None,
                    bool(record.get("supported", True)))
