"""``elemta serve``: set up logging, start the daemon on the reactor, run until stopped."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.logger import Logger, globalLogBeginner

from elemta_smtp.config import Config
from elemta_smtp.errors import ElemtaError
from elemta_smtp.logformat import observer
from elemta_smtp.net.descriptors import raise_open_files_limit

_log = Logger(namespace="elemta")


def _raise_open_files_limit() -> None:
    """Every connection holds a file descriptor: take the whole hard limit, not the soft one
    (often 1024, below the default max_connections alone)."""
    before, after = raise_open_files_limit()
    if after != before:
        _log.info("open files limit raised from {before} to {after}", before=before, after=after)
    else:
        _log.info("open files limit {limit}", limit=after)


def serve(config: Config, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit status."""
    if "twisted.internet.reactor" not in sys.modules:  # (tests may have installed one)
        from elemta_smtp.net.pollreactor import install

        install()
    from twisted.internet import reactor as _reactor

    from elemta_smtp.service import ElemtaService, install_signal_handlers

    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo([observer(out)], redirectStandardIO=False,
                                     discardBuffer=True)
    _raise_open_files_limit()
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
