"""Twisted's epoll reactor without its per-event log context.

``EPollReactor.doPoll`` runs every socket event inside ``log.callWithLogger``, which
asks the connection for its log prefix and pushes a copied log-context dict for the
call: a measurable share of the daemon's CPU per message, and only used when
something is logged through the legacy ``twisted.python.log`` API (elemta logs with
``twisted.logger``). ``LeanEPollReactor`` dispatches events directly and builds that
context only when an exception has to be logged, so errors read as before: an
exception in a handler is logged with the connection's prefix, the connection is
dropped and the reactor keeps serving.
"""

from __future__ import annotations

import errno
import sys
from typing import Protocol

from twisted.internet import epollreactor, posixbase
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST, installReactor
from twisted.python import failure, log


class _Selectable(Protocol):
    """What the reactor calls on a registered reader/writer (a TCP connection or port)."""

    def logPrefix(self) -> str: ...
    def fileno(self) -> int: ...
    def doRead(self) -> BaseException | None: ...
    def doWrite(self) -> BaseException | None: ...


def _log_prefix(selectable: _Selectable) -> str:
    try:
        return str(selectable.logPrefix())
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "(buggy logPrefix method)"


def _log_error(selectable: _Selectable, error: failure.Failure) -> None:
    """Log ``error`` the way ``log.callWithLogger`` would: under the connection's prefix."""
    log.err(error, system=_log_prefix(selectable))  # type: ignore[no-untyped-call, unused-ignore]


class LeanEPollReactor(epollreactor.EPollReactor):  # type: ignore[misc, unused-ignore]
    """``EPollReactor`` whose event dispatch skips the log context until there is an error."""

    def doPoll(self, timeout: float | None) -> None:
        """Poll for events and handle each; same contract as ``EPollReactor.doPoll``."""
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                self._dispatch(selectable, fd, event)

    doIteration = doPoll

    def _dispatch(self, selectable: _Selectable, fd: int, event: int) -> None:
        """``PosixReactorBase._doReadOrWrite`` with the error logged under the prefix."""
        why: BaseException | None = None
        in_read = False
        if event & self._POLL_DISCONNECTED and not (event & self._POLL_IN):
            in_read = fd in self._reads
            why = CONNECTION_DONE if in_read else CONNECTION_LOST
        else:
            try:
                if selectable.fileno() == -1:
                    why = posixbase._NO_FILEDESC
                else:
                    if event & self._POLL_IN:
                        why = selectable.doRead()
                        in_read = True
                    if not why and event & self._POLL_OUT:
                        why = selectable.doWrite()
                        in_read = False
            except BaseException:  # as Twisted: any handler error is logged, the link dropped
                why = sys.exc_info()[1]
                _log_error(selectable, failure.Failure())  # type: ignore[no-untyped-call, unused-ignore]
        if why:
            try:
                self._disconnectSelectable(selectable, why, in_read)  # type: ignore[no-untyped-call, unused-ignore]
            except KeyboardInterrupt:
                raise
            except BaseException:
                _log_error(selectable, failure.Failure())  # type: ignore[no-untyped-call, unused-ignore]


def install() -> None:
    """Install ``LeanEPollReactor`` as the global reactor (before anything imports one)."""
    installReactor(LeanEPollReactor())  # type: ignore[no-untyped-call, unused-ignore]
