"""state.json: round trip, atomic replacement, and corrupt files never crash."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher

from elemta_smtp.cache.state import Event, Seen, State, load_state, save_state
from elemta_smtp.errors import CacheError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def full_state() -> State:
    return State(
        sent=frozenset({"expiry:0a:30", "expiry:0a:14"}),
        outbox=(Event(id="renewal-failed:x", kind="renewal-failed", at=T0, names=("a.example",),
                      serial="0a", not_after=T0 + timedelta(days=3), reason="boom"),),
        last_seen=Seen("0a", T0 + timedelta(days=3), ("a.example",)),
    )


def test_round_trip(tmp_path: Path) -> None:
    """What is saved is what is loaded."""
    path = tmp_path / "state.json"
    save_state(path, full_state())
    assert load_state(path) == full_state()
    assert path.stat().st_mode & 0o777 == 0o600


def test_missing_file_is_fresh(tmp_path: Path) -> None:
    """No state.json yet means an empty state."""
    assert load_state(tmp_path / "state.json") == State()


def test_save_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """A second save replaces the file; no temp file stays behind in the folder."""
    path = tmp_path / "state.json"
    save_state(path, State())
    save_state(path, full_state())
    assert os.listdir(tmp_path) == ["state.json"]
    assert json.loads(path.read_text())["sent"] == ["expiry:0a:14", "expiry:0a:30"]


def test_failed_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the disk refuses the write, save raises, the old state stays intact and no temp is left."""
    path = tmp_path / "state.json"
    save_state(path, full_state())

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CacheError, match="No space left on device"):
        save_state(path, State())
    monkeypatch.undo()
    assert load_state(path) == full_state()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("text", [
    pytest.param("{not json", id="not-json"),
    pytest.param("[]", id="not-an-object"),
    pytest.param('{"version": 99}', id="unknown-version"),
    pytest.param('{"version": 1, "sent": "x"}', id="sent-not-a-list"),
    pytest.param('{"version": 1, "outbox": [{"id": "a", "at": "yesterday"}]}', id="bad-time"),
    pytest.param('{"version": 1, "last_seen": {"serial": "a", "not_after": "2026-01-01T00:00:00"}}',
                 id="naive-time"),
    pytest.param("\udcff", id="not-utf8"),
])
def test_corrupt_file_is_set_aside(tmp_path: Path, logged: list[LogEvent], text: str) -> None:
    """A corrupt state.json is logged, kept as state.json.corrupt, and a fresh state returned."""
    path = tmp_path / "state.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert load_state(path) == State()
    errors = [e for e in logged if e.get("log_level") is LogLevel.error]
    assert len(errors) == 1 and "is corrupt" in errors[0]["log_format"]
    assert (tmp_path / "state.json.corrupt").read_bytes() == text.encode("utf-8", "surrogateescape")
    assert not path.exists()


def test_unknown_top_level_keys_survive(tmp_path: Path) -> None:
    """Keys a newer elemta wrote are kept when this one saves."""
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "future": {"x": 1}}')
    state = load_state(path)
    save_state(path, state)
    assert json.loads(path.read_text())["future"] == {"x": 1}
