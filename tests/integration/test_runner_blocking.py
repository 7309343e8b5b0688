"""The blocking front of the one certbot runner (acme/blocking.py), as `elemta cert renew`
and `elemta cert test --dry-run` use it: real children, the same RunResult and reason as the
daemon's runs, and the same timeout: SIGTERM to the whole group, SIGKILL after the grace."""

from __future__ import annotations

import os
import sys
import time

from elemta_smtp.acme.blocking import run_blocking
from tests.fakes import CERTBOT_STDERR, CERTBOT_STDOUT
from tests.support import process_gone as _gone

PY = sys.executable


def test_success_and_output() -> None:
    """Exit 0 is ok, with the child's stdout lines kept, and it ran in a session of its own."""
    result = run_blocking([PY, "-c", "import os; print(os.getsid(0) == os.getpid())"], timeout=30)
    assert result.ok and result.stdout_tail == ("True",)
    assert result.reason == ""


def test_failure_reason_is_what_certbot_said() -> None:
    """A failing certbot's CA detail and hint reach the reason, without the boilerplate."""
    script = (f"import sys\nsys.stdout.write({CERTBOT_STDOUT!r})\n"
              f"sys.stderr.write({CERTBOT_STDERR!r})\nsys.exit(1)")
    result = run_blocking([PY, "-c", script], timeout=30)
    assert not result.ok and result.exit_code == 1
    assert result.reason.startswith("certbot exited with status 1:\nSome challenges have failed.")
    assert "returned 404" in result.reason and "Saving debug log" not in result.reason


def test_timeout_kills_the_child_and_its_group() -> None:
    """At the timeout the child and the grandchild it started are gone, and the reason says so."""
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(p.pid, flush=True)\ntime.sleep(60)")
    started = time.monotonic()
    result = run_blocking([PY, "-c", script], timeout=1, kill_grace=2)
    assert time.monotonic() - started < 10
    assert result.timed_out and "did not finish within" in result.reason
    grandchild = int(result.stdout_tail[0])
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_sigkill_after_the_grace_when_sigterm_is_ignored() -> None:
    """A child that ignores SIGTERM is killed with SIGKILL once the grace period has passed."""
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(60)")
    started = time.monotonic()
    result = run_blocking([PY, "-c", script], timeout=0.5, kill_grace=1)
    assert result.timed_out and result.signal == 9
    assert 1.4 < time.monotonic() - started < 10


def test_environment_is_passed() -> None:
    """The child gets the environment given (the daemon's pid variable is set only by the daemon)."""
    result = run_blocking([PY, "-c", "import os; print(os.environ.get('X_PROBE'))"], timeout=30,
                          env={**os.environ, "X_PROBE": "yes"})
    assert result.stdout_tail == ("yes",)
