"""The daemon's log lines: Twisted's classic text format, one line per event, no chatter."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText

from elemta_smtp.logformat import LineObserver, is_port_chatter

T = 1_795_507_951.25


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"log_level": LogLevel.info, "log_namespace": "elemta.smtp", "log_time": T}
    base.update(fields)
    return base


def written(*events: dict[str, Any]) -> str:
    out = io.StringIO()
    observer = LineObserver(out)
    for e in events:
        observer(e)
    return out.getvalue()


@pytest.mark.parametrize("fields", [
    {"log_format": "message {queue_id} from=<{sender}> rcpts={rcpts}", "queue_id": "AB12",
     "sender": "a@b.example", "rcpts": 2},
    {"log_format": "two\nlines {x}", "x": 1},
    {"log_format": "a {missing} field"},
    {"log_format": "{call()}", "call": lambda: "called"},
], ids=["fields", "newline", "missing-field", "callable"])
def test_lines_match_twisteds_classic_format(fields: dict[str, Any]) -> None:
    """The fast path writes exactly what Twisted's own classic formatter would."""
    e = event(**fields)
    expected = formatEventAsClassicLogText(e, lambda t: LineObserver(io.StringIO())._time(t))
    assert written(e) == expected


@pytest.mark.parametrize("level", [LogLevel.debug, None], ids=["debug", "no-level"])
def test_below_info_is_dropped(level: LogLevel | None) -> None:
    """Debug events and events without a level write nothing."""
    assert written(event(log_level=level, log_format="hidden")) == ""


def test_warnings_and_errors_are_written() -> None:
    """Warnings and errors carry their level in the line."""
    text = written(event(log_level=LogLevel.warn, log_format="w"),
                   event(log_level=LogLevel.error, log_format="e"))
    assert "[elemta.smtp#warn] w\n" in text and "[elemta.smtp#error] e\n" in text


@pytest.mark.parametrize("text", ["_SMTPFactory starting on 2525", "_SMTPFactory (TLS) starting on 4465",
                                  "ChallengeSite starting on 8080", "(TCP Port 2525 Closed)"])
def test_twisted_port_chatter_is_dropped(text: str) -> None:
    """Twisted's per-port start/stop lines are dropped: elemta logs its listeners itself."""
    e = event(log_namespace="log_legacy", log_format="{log_text}", log_text=text,
              log_system="-", message=(text,))
    assert is_port_chatter(e)
    assert written(e) == ""


def test_other_legacy_lines_are_kept() -> None:
    """Other lines from Twisted's legacy log still get through."""
    text = "Received SIGTERM, shutting down."
    e = event(log_namespace="log_legacy", log_format="{log_text}", log_text=text,
              log_system="-", message=(text,))
    assert not is_port_chatter(e)
    assert text in written(e)
