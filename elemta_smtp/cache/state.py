"""The notification state kept in ``<cache_dir>/state.json``.

What was already mailed (so a restart never mails twice), notices waiting to be
mailed (so a failed send is retried, never dropped), and the certificate seen
last (so a new serial is recognised as a renewal, whoever ran certbot).

The file is replaced atomically: temp file in the same folder, fsync, rename,
fsync the folder. A corrupt file is set aside and logged; elemta starts fresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from elemta_smtp.cache.atomic import atomic_write

log = Logger(namespace="elemta.acme.state")

VERSION = 1
#: Undelivered notices kept at most; the oldest are dropped (and logged) beyond this.
OUTBOX_LIMIT = 50


@dataclass(frozen=True)
class Event:
    """Something that happened and is to be mailed: a renewal, a failure, an issuance."""

    id: str
    kind: str  # "renewed" | "renewal-failed" | "issued" | "acquire-failed"
    at: datetime
    names: tuple[str, ...] = ()
    serial: str = ""
    old_serial: str = ""
    not_after: datetime | None = None
    old_not_after: datetime | None = None
    reason: str = ""
    key: str = ""  # which certificate's key, for DANE notices: "ECDSA" | "RSA" ("" any)


@dataclass(frozen=True)
class Seen:
    """The real (not bootstrap) certificate served at the last check."""

    serial: str
    not_after: datetime
    names: tuple[str, ...]


@dataclass(frozen=True)
class State:
    sent: frozenset[str] = frozenset()  # keys of expiry notices already mailed
    outbox: tuple[Event, ...] = ()
    last_seen: Seen | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


# --- JSON (pure) ---


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return parsed


def _optional_time(value: object) -> datetime | None:
    return None if value is None else _time(value)


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return tuple(value)


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def event_to_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "at": event.at.isoformat(),
        "names": list(event.names),
        "serial": event.serial,
        "old_serial": event.old_serial,
        "not_after": event.not_after.isoformat() if event.not_after else None,
        "old_not_after": event.old_not_after.isoformat() if event.old_not_after else None,
        "reason": event.reason,
        "key": event.key,
    }


def event_from_json(record: object) -> Event:
    if not isinstance(record, dict):
        raise ValueError(f"expected an object, got {record!r}")
    return Event(
        id=_text(record, "id"),
        kind=_text(record, "kind"),
        at=_time(record.get("at")),
        names=_names(record.get("names", [])),
        serial=_text(record, "serial"),
        old_serial=_text(record, "old_serial"),
        not_after=_optional_time(record.get("not_after")),
        old_not_after=_optional_time(record.get("old_not_after")),
        reason=_text(record, "reason"),
        key=_text(record, "key"),
    )


def state_to_json(state: State) -> dict[str, Any]:
    seen = state.last_seen
    return {
        "version": VERSION,
        "sent": sorted(state.sent),
        "outbox": [event_to_json(e) for e in state.outbox],
        "last_seen": None if seen is None else {
            "serial": seen.serial, "not_after": seen.not_after.isoformat(),
            "names": list(seen.names)},
        **{k: v for k, v in state.extra.items() if k not in ("version", "sent", "outbox",
                                                               "last_seen")},
    }


def state_from_json(data: object) -> State:
    """Parse the JSON document; raises ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the top level is not an object")
    if data.get("version") != VERSION:
        raise ValueError(f"unknown version {data.get('version')!r} (this elemta writes {VERSION})")
    sent = data.get("sent", [])
    if not isinstance(sent, list) or not all(isinstance(s, str) for s in sent):
        raise ValueError("sent: expected a list of strings")
    outbox = data.get("outbox", [])
    if not isinstance(outbox, list):
        raise ValueError("outbox: expected a list")
    raw_seen = data.get("last_seen")
    seen = None
    if raw_seen is not None:
        if not isinstance(raw_seen, dict):
            raise ValueError("last_seen: expected an object")
        seen = Seen(serial=_text(raw_seen, "serial"), not_after=_time(raw_seen.get("not_after")),
                    names=_names(raw_seen.get("names", [])))
    extra = {k: v for k, v in data.items() if k not in ("version", "sent", "outbox", "last_seen")}
    return State(sent=frozenset(sent), outbox=tuple(event_from_json(e) for e in outbox),
                 last_seen=seen, extra=extra)


# --- the file (I/O) ---



def load_state(path: Path) -> State:
    """Read the state; a missing file is a fresh state, a corrupt one is set aside
    as ``state.json.corrupt`` and logged, and a fresh state is returned. Never raises."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return State()
    except OSError as exc:
        log.error("cannot read {path}: {error}; starting with a fresh notification state "
                  "(a notice may be mailed twice)", path=str(path), error=str(exc))
        return State()
    try:
        return state_from_json(json.loads(raw.decode("utf-8")))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            kept = f"kept as {aside}"
        except OSError as move_error:
            kept = f"could not set it aside: {move_error.strerror}"
        log.error("{path} is corrupt ({error}); {kept}; starting with a fresh notification "
                  "state (a notice may be mailed twice)", path=str(path), error=str(exc),
                  kept=kept)
        return State()


def save_state(path: Path, state: State) -> None:
    """Write the state atomically and durably (``cache.atomic``).
    Raises ``CacheError`` on failure; the old file is then left as it was."""
    data = (json.dumps(state_to_json(state), indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, data)
