"""One piece of work at a time: the certificate manager's checks never overlap.

A request while work runs does not start a second one: it gets a Deferred that fires when
the running work ends, and with ``again`` the work it asked for runs once after that
(several such requests meanwhile make one run).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="elemta.acme")

Work = Callable[[], Coroutine[Any, Any, None]]


class OneAtATime:
    def __init__(self) -> None:
        self.busy: Deferred[None] | None = None  # the work running now
        self._after: Callable[[], object] | None = None

    def run(self, work: Work, what: str, *, again: bool = False) -> Deferred[None]:
        """Start ``work()`` now; when busy, fire when the running work ends (and with
        ``again``, run ``work`` once after it). A failure is logged as ``what`` failing."""
        if self.busy is not None:
            if again:
                self._after = lambda: self.run(work, what)
            return self._when_done(self.busy)
        done = Deferred.fromCoroutine(work())
        self.busy = done

        def finished(result: object) -> None:
            self.busy = None
            if isinstance(result, Failure):
                log.failure("{what} failed unexpectedly", failure=result, what=what)
            after, self._after = self._after, None
            if after is not None:
                after()

        return done.addBoth(finished)

    @staticmethod
    def _when_done(busy: Deferred[None]) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()

        def release(result: object) -> object:
            waiter.callback(None)
            return result

        busy.addBoth(release)
        return waiter
