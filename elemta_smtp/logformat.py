"""The daemon's log lines: one line per event, ``<time> [<namespace>#<level>] <text>``,
written fast (the per-message lines are on the hot path)."""

from __future__ import annotations

import re
import time
from typing import TextIO

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEventAsClassicLogText,
)
from zope.interface import implementer  # type: ignore[import-untyped, unused-ignore]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
_SHOWN = frozenset({LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical})
# Twisted's own lines for every port opened and closed; elemta logs its listeners itself.
_PORT_CHATTER = re.compile(r"^(\S.* starting on \d+|\(\w+ Port \d+ Closed\))$")


def is_port_chatter(event: LogEvent) -> bool:
    """Is this Twisted's "X starting on 25" / "(TCP Port 25 Closed)" line?"""
    text = event.get("log_text")
    return (event.get("log_namespace") == "log_legacy" and isinstance(text, str)
            and _PORT_CHATTER.match(text) is not None)


@implementer(ILogObserver)
class LineObserver:
    """One line per event on ``stream``, ``<time> [<namespace>#<level>] <text>`` (the
    classic Twisted text format); events below info and events without a level or
    namespace are dropped, as ``LogLevelFilterPredicate(info)`` would.

    Built for the per-message log lines: the level is checked before any formatting,
    the time text is made once per second, plain ``{name}`` formats are filled in by
    ``str.format_map`` (in C), and each line is one write. Anything unusual (a
    traceback, a ``{call()}`` field, a bad format) goes through Twisted's own formatter."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._second = -1
        self._stamp = ""

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if level is None or level not in _SHOWN:
            return
        namespace = event.get("log_namespace")
        if not namespace:
            return
        line = self._fast_line(event, namespace, level.name)
        if line is None:
            if is_port_chatter(event):
                return
            line = formatEventAsClassicLogText(event, self._time)
            if not line:
                return
        self._stream.write(line)
        self._stream.flush()

    def _fast_line(self, event: LogEvent, namespace: str, level: str) -> str | None:
        fmt = event.get("log_format")
        if type(fmt) is not str or "log_failure" in event or "log_system" in event or "()" in fmt:
            return None
        try:
            text = fmt.format_map(event)
        except Exception:  # any formatting problem: let Twisted's formatter report it
            return None
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        return f"{self._time(event.get('log_time'))} [{namespace}#{level}] {text}\n"

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._stamp = time.strftime(TIME_FORMAT, time.localtime(second))
            self._second = second
        return self._stamp


def observer(stream: TextIO) -> ILogObserver:
    """One line per event on ``stream``; debug events are dropped."""
    return LineObserver(stream)  # type: ignore[no-any-return, unused-ignore]
