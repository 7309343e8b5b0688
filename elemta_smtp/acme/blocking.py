"""The blocking front of the certbot runner, for the one-shot ``elemta cert ...`` commands.

``run_blocking`` drives the daemon's own ``ProcessRunner`` (runner.py: spawning in a new
session, timeout -> SIGTERM to the group -> SIGKILL after the grace period, another
user when root, ``RunResult`` and its reason) to the end of one run, without Twisted's
global reactor: ``_Loop`` is just enough of a reactor for that: ``spawnProcess`` over
``subprocess.Popen``, ``callLater`` timers, and a loop that reads the child's pipes.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from elemta_smtp.acme.runner import ProcessRunner, RunResult
from elemta_smtp.cache.lineages import User

_POLL = 0.05  # seconds between looks at a child that closed its pipes but has not exited


class _Call:
    """A timer of ``_Loop.callLater``."""

    def __init__(self, when: float, call: Callable[[], object]) -> None:
        self.when = when
        self.call = call
        self.cancelled = False
        self.called = False

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True


class _Process:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid: int | None = popen.pid

    def closeStdin(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()


class _Loop:
    """Runs one child at a time for ``ProcessRunner``: ``seconds``, ``callLater`` and
    ``spawnProcess`` as the runner uses them, and ``run_until`` to turn the wheel."""

    def __init__(self) -> None:
        self._timers: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self._children: list[tuple[_Process, ProcessProtocol]] = []

    def seconds(self) -> float:
        return time.monotonic()

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,
                  **kw: object) -> _Call:
        call = _Call(self.seconds() + delay, lambda: callable(*args, **kw))
        heapq.heappush(self._timers, (call.when, next(self._order), call))
        return call

    def spawnProcess(self, processProtocol: ProcessProtocol, executable: str,
                     args: Sequence[str], *, env: Mapping[str, str] | None = None,
                     childFDs: Mapping[int, str] | None = None) -> _Process:
        popen = subprocess.Popen(list(args), executable=executable, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        process = _Process(popen)
        self._children.append((process, processProtocol))
        return process

    def _fire_timers(self) -> None:
        now = self.seconds()
        while self._timers and self._timers[0][0] <= now:
            _, _, call = heapq.heappop(self._timers)
            if call.active():
                call.called = True
                call.call()

    def _timeout(self, limit: float) -> float:
        pending = [t[0] for t in self._timers if t[2].active()]
        return max(0.0, min([limit, *(when - self.seconds() for when in pending)]))

    def run_until(self, done: Callable[[], bool]) -> None:
        """Read the children's output, fire timers and report ends until ``done()``."""
        while not done():
            self._fire_timers()
            if done():
                return
            if not self._children:
                time.sleep(self._timeout(_POLL))
                continue
            process, protocol = self._children[0]
            self._pump(process, protocol)

    def _pump(self, process: _Process, protocol: ProcessProtocol) -> None:
        popen = process.popen
        pipes: dict[IO[bytes], int] = {p: fd for fd, p in ((1, popen.stdout), (2, popen.stderr))
                                       if p is not None and not p.closed}
        if pipes:
            with selectors.DefaultSelector() as selector:
                for pipe, fd in pipes.items():
                    selector.register(pipe, selectors.EVENT_READ, (pipe, fd))
                for key, _ in selector.select(self._timeout(1.0)):
                    ready, fd = key.data
                    data = os.read(ready.fileno(), 65536)
                    if data:
                        protocol.childDataReceived(fd, data)
                    else:
                        ready.close()
            return
        try:
            popen.wait(self._timeout(_POLL))
        except subprocess.TimeoutExpired:
            return
        self._children.pop(0)
        code = popen.returncode
        ended: Exception
        if code == 0:
            ended = ProcessDone(0)  # type: ignore[no-untyped-call]
        elif code > 0:
            ended = ProcessTerminated(exitCode=code)  # type: ignore[no-untyped-call]
        else:
            ended = ProcessTerminated(signal=-code)  # type: ignore[no-untyped-call]
        protocol.processEnded(Failure(ended))  # type: ignore[no-untyped-call]


def run_blocking(argv: Sequence[str], timeout: float, user: User | None = None,
                 env: Mapping[str, str] | None = None, kill_grace: float = 5.0) -> RunResult:
    """Run ``argv`` with the certbot runner and wait for its ``RunResult`` (as ``user``
    when given: we are root). Same spawning, timeout, kill and reason as the daemon's runs."""
    loop = _Loop()
    results: list[RunResult] = []
    running = ProcessRunner(loop, env=env, kill_grace=kill_grace).run(argv, timeout, user)
    running.addCallback(results.append)
    loop.run_until(lambda: bool(results))
    return results[0]
