"""The certbot runner with real child processes: output collected, timeouts that kill
the whole process group, what certbot said about a failure as the reason, cancelling.
Each test waits for the child to say it is ready (a file it writes), never a fixed time."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.trial import unittest

from elemta_smtp.acme.runner import (
    ProcessRunner,
    RunResult,
)
from tests.fakes import CERTBOT_STDERR, CERTBOT_STDOUT
from tests.support import process_gone as _gone

PY = sys.executable


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def ready_file() -> Path:
    """A path a child creates once it is ready (a fresh temporary name)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix="elemta-ready-")
    os.close(fd)
    os.unlink(name)
    return Path(name)


def until_ready(path: Path, timeout: float = 15.0) -> Generator[Deferred[Any], Any, None]:
    """Yield to the reactor until the child has created ``path`` (bounded)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the child never became ready ({path})"
        yield task.deferLater(_reactor(), 0.01, lambda: None)
    path.unlink()


class RealChildTests(unittest.TestCase):
    """Children run on the real reactor; timeouts come from a task.Clock unless said."""

    @inlineCallbacks
    def test_success_collects_output(self) -> Generator[Deferred[Any], Any, None]:
        """Exit 0 is ok, with the child's stdout lines kept."""
        result: RunResult = yield ProcessRunner(_reactor(), clock=task.Clock()).run(
            [PY, "-c", "print('one'); print('two')"], timeout=30)
        assert result.ok and result.exit_code == 0
        assert result.stdout_tail == ("one", "two")
        assert result.reason == ""

    @inlineCallbacks
    def test_failure_reason_keeps_the_ca_detail_from_stdout(
            self) -> Generator[Deferred[Any], Any, None]:
        """certbot's CA report and hint (stdout) reach the reason even when stderr has lines."""
        script = ("import sys\n"
                  f"sys.stdout.write({CERTBOT_STDOUT!r})\n"
                  f"sys.stderr.write({CERTBOT_STDERR!r})\n"
                  "sys.exit(1)")
        result: RunResult = yield ProcessRunner(_reactor(), clock=task.Clock()).run(
            [PY, "-c", script], timeout=30)
        assert not result.ok and result.exit_code == 1
        assert result.reason.startswith("certbot exited with status 1:\nSome challenges have failed.")
        assert "Detail: Invalid response from http://mail.example.com/.well-known/" in result.reason
        assert "returned 404" in result.reason
        assert "Hint: The Certificate Authority could not download" in result.reason
        assert "Saving debug log" not in result.reason and "Ask for help" not in result.reason

    @inlineCallbacks
    def test_missing_program(self) -> Generator[Deferred[Any], Any, None]:
        """A command that does not exist fails with words saying so, not an exception."""
        result: RunResult = yield ProcessRunner(_reactor(), clock=task.Clock()).run(
            ["/nonexistent/certbot"], timeout=30)
        assert not result.ok
        assert "No such file" in result.reason

    @inlineCallbacks
    def test_timeout_kills_hanging_child_and_its_group(self) -> Generator[Deferred[Any], Any, None]:
        """At the timeout a hanging child and the grandchild it started are killed."""
        clock = task.Clock()
        runner = ProcessRunner(_reactor(), clock=clock)
        ready = ready_file()
        script = ("import subprocess, sys, time\n"
                  "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                  f"print(p.pid, flush=True)\nopen({str(ready)!r}, 'w').close()\ntime.sleep(60)")
        pending = runner.run([PY, "-c", script], timeout=300)
        yield from until_ready(ready)
        assert not pending.called  # still running: the clock has not moved
        clock.advance(300)
        result: RunResult = yield pending
        assert result.timed_out and not result.ok
        assert "did not finish" in result.reason
        grandchild = int(result.stdout_tail[0])
        deadline = time.monotonic() + 5
        while not _gone(grandchild) and time.monotonic() < deadline:
            yield task.deferLater(_reactor(), 0.05, lambda: None)
        assert _gone(grandchild)

    @inlineCallbacks
    def test_sigkill_when_sigterm_is_ignored(self) -> Generator[Deferred[Any], Any, None]:
        """A child that ignores SIGTERM is killed with SIGKILL after the grace period."""
        clock = task.Clock()
        runner = ProcessRunner(_reactor(), clock=clock, kill_grace=5)
        ready, termed = ready_file(), ready_file()
        script = ("import signal, time\n"
                  f"signal.signal(signal.SIGTERM, lambda *a: open({str(termed)!r}, 'w').close())\n"
                  f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)\ntime.sleep(60)")
        pending = runner.run([PY, "-c", script], timeout=10)
        yield from until_ready(ready)  # its SIGTERM handler is installed
        clock.advance(10)
        yield from until_ready(termed)  # SIGTERM arrived and did not end it
        assert not pending.called
        clock.advance(5)
        result: RunResult = yield pending
        assert result.timed_out and result.signal == 9

    @inlineCallbacks
    def test_real_time_timeout(self) -> Generator[Deferred[Any], Any, None]:
        """With the reactor as the clock, a 1s timeout ends `time.sleep(60)` within seconds."""
        started = time.monotonic()
        result: RunResult = yield ProcessRunner(_reactor(), kill_grace=1).run(
            [PY, "-c", "import time; time.sleep(60)"], timeout=1)
        assert result.timed_out
        assert time.monotonic() - started < 10


class CancelTests(unittest.TestCase):
    @inlineCallbacks
    def test_cancel_stops_the_child(self) -> Generator[Deferred[Any], Any, None]:
        """Cancelling a run (the daemon stops) ends the child's process group."""
        clock = task.Clock()
        ready = ready_file()
        pending = ProcessRunner(_reactor(), clock=clock).run(
            [PY, "-c", f"import os, time; print(os.getpid(), flush=True); "
                       f"open({str(ready)!r}, 'w').close(); time.sleep(60)"],
            timeout=300)
        yield from until_ready(ready)
        pending.cancel()
        with pytest.raises(CancelledError):
            yield pending
        deadline = time.monotonic() + 5
        # the child's pid is not known to the test; its process group is gone once no
        # process with our argv remains
        while time.monotonic() < deadline:
            alive = [p for p in os.listdir("/proc") if p.isdigit() and str(ready) in _cmdline(p)]
            if not alive:
                break
            yield task.deferLater(_reactor(), 0.05, lambda: None)
        assert not alive


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


_DAEMON = """import sys
from elemta_smtp.acme.blocking import run_blocking
run_blocking(["sh", "-c", "echo $$ > " + sys.argv[1] + ".tmp && mv " + sys.argv[1] + ".tmp "
              + sys.argv[1] + " && exec sleep 60"], timeout=120)
"""


def test_certbot_ends_when_the_daemon_running_it_is_killed(tmp_path: Path) -> None:
    """A daemon killed by SIGKILL does not leave the certbot it runs behind (in a cluster it
    would hold a lease nobody renews): the child gets SIGTERM from the kernel at once."""
    import subprocess

    pid_file = tmp_path / "child.pid"
    daemon = subprocess.Popen([PY, "-c", _DAEMON, str(pid_file)])
    try:
        deadline = time.monotonic() + 15
        while not pid_file.exists():
            assert time.monotonic() < deadline and daemon.poll() is None, "child never started"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        assert not _gone(child)
        daemon.kill()
        daemon.wait()
        deadline = time.monotonic() + 5
        while not _gone(child):
            assert time.monotonic() < deadline, "the child outlived its daemon"
            time.sleep(0.02)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
