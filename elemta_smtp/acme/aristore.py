"""``<cache_dir>/ari.json``: the renewal schedules of the certificates elemta renews, by
slot (the live/ file name), so the moment drawn inside a CA's window survives a restart.
Written atomically; a broken file is ignored (logged by the caller) and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

from elemta_smtp.acme.ari import Schedule, schedule_from_json, schedule_to_json
from elemta_smtp.cache.atomic import atomic_write

VERSION = 1


def load(path: Path) -> dict[str, Schedule]:
    """The schedules by slot; empty for a missing file. Raises ``ValueError`` for a broken one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"unknown version {doc.get('version') if isinstance(doc, dict) else doc!r}")
        return {str(slot): schedule_from_json(record)
                for slot, record in dict(doc.get("certificates", {})).items()}
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        # a time out of range, JSON nested too deep: broken all the same
        raise ValueError(str(exc) or type(exc).__name__) from None


def save(path: Path, slot: str, schedule: Schedule) -> None:
    """Record ``schedule`` for ``slot``, keeping the other slots' (a broken file is replaced).
    Raises ``CacheError`` when it cannot be written."""
    try:
        schedules = load(path)
    except ValueError:
        schedules = {}
    schedules[slot] = schedule
    doc = {"version": VERSION,
           "certificates": {k: schedule_to_json(v) for k, v in sorted(schedules.items())}}
    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
