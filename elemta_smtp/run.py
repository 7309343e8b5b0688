"""``elemta serve``: set up logging, start the daemon on the reactor, run until stopped."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from elemta_smtp.config import Config
from elemta_smtp.errors import ElemtaError


def _observer(stream: TextIO) -> ILogObserver:
    """One line per event on ``stream``; debug events are dropped."""
    text = textFileLogObserver(stream, timeFormat="%Y-%m-%dT%H:%M:%S%z")
    return FilteringLogObserver(text, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])


def serve(config: Config, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit status."""
    from twisted.internet import reactor as _reactor

    from elemta_smtp.service import ElemtaService, install_signal_handlers

    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo([_observer(out)], redirectStandardIO=False,
                                     discardBuffer=True)
    try:
        service = ElemtaService(config, reactor)
        service.privilegedStartService()
        service.startService()
    except ElemtaError as exc:
        print(f"error: {exc}", file=err)
        print("elemta did not start.", file=err)
        return 1
    install_signal_handlers(service, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
