"""The certbot plugin's restart() against real processes and signals (the daemon handle),
and its authenticator serving HTTP-01 on a real socket."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from acme import challenges

from elemta_smtp import daemon
from elemta_smtp.cache import layout
from tests.plugin_support import Root, achall, display, make_lineage, root
from tests.support import free_port, http_get

__all__ = ["display", "root"]  # fixtures
pytestmark = pytest.mark.usefixtures("display")


def test_restart_with_stale_pid_is_not_an_error(root: Root, display: io.StringIO) -> None:
    """A pid file naming a process that is gone is reported, not raised."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    root.pid_file.write_text(f"{gone.pid}\n")
    root.plugin("install").restart()
    assert f"names pid {gone.pid}" in display.getvalue()


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    """A process that reports SIGHUP on stdout; its command line looks like python -m elemta_smtp."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: (print('HUP', flush=True), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "elemta_smtp"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_restart_sends_sighup_to_the_daemon(root: Root, child: subprocess.Popen[str],
                                            display: io.StringIO) -> None:
    """restart() delivers SIGHUP to the pid in [server] pid_file."""
    root.pid_file.write_text(f"{child.pid}\n")
    root.plugin("install").restart()
    assert child.stdout is not None and child.stdout.readline() == "HUP\n"
    assert f"the daemon (pid {child.pid}) was told to reload (SIGHUP)" in display.getvalue()


def test_restart_never_signals_a_foreign_process(root: Root, display: io.StringIO) -> None:
    """A reused pid that is not elemta is left alone (SIGHUP would kill it): the process
    reports any SIGHUP it gets, and none arrives before the SIGTERM that ends it (pending
    signals are delivered lowest number first, so a HUP sent earlier would come first)."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
            "print('ready', flush=True)\ntime.sleep(30)\n")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "ready\n"
        root.pid_file.write_text(f"{other.pid}\n")
        root.plugin("install").restart()
        assert f"names pid {other.pid}, which is not an elemta process" in display.getvalue()
        other.terminate()
        assert other.stdout.read() == ""
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()


def test_restart_leaves_the_daemon_that_runs_this_certbot_alone(
        root: Root, child: subprocess.Popen[str], display: io.StringIO,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the daemon itself runs certbot (its pid in ELEMTA_DAEMON_PID), restart() installs
    but sends no SIGHUP (the daemon reloads once, itself, when certbot ends), and says so."""
    root.pid_file.write_text(f"{child.pid}\n")
    monkeypatch.setenv(daemon.DAEMON_PID_ENV, str(child.pid))
    folder = make_lineage(root.live_dir, ["mail.example.com"])
    root.plugin("certonly", "-d", "mail.example.com").restart()
    assert (layout.live_dir(root.cache_dir) / "mail.example.com.pem").is_file()
    assert f"the daemon (pid {child.pid}) runs this certbot and reloads when it ends" \
        in display.getvalue()
    child.terminate()  # no HUP was printed before it ends
    assert child.stdout is not None and child.stdout.read() == ""
    assert folder.is_dir()


def test_restart_signals_a_daemon_other_than_the_one_running_certbot(
        root: Root, child: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ELEMTA_DAEMON_PID naming another pid (certbot run by some other elemta) does not stop
    the SIGHUP to the daemon in pid_file."""
    root.pid_file.write_text(f"{child.pid}\n")
    monkeypatch.setenv(daemon.DAEMON_PID_ENV, str(os.getpid()))
    root.plugin("install").restart()
    assert child.stdout is not None and child.stdout.readline() == "HUP\n"


def test_authenticator_prefers_http01_and_uses_configured_webroot(root: Root) -> None:
    """get_chall_pref is [HTTP01]; perform writes into <cache_dir>/webroot and serves it."""
    port = free_port()
    root.write(http_port=port)
    plugin = root.plugin("certonly")
    plugin.prepare()
    assert list(plugin.get_chall_pref("mail.example.com")) == [challenges.HTTP01]
    a = achall()
    plugin.perform([a])
    try:
        token = a.chall.encode("token")
        assert (layout.challenge_dir(root.cache_dir) / token).is_file()
        assert http_get(port, f"/.well-known/acme-challenge/{token}")[0] == 200
    finally:
        plugin.cleanup([a])
    assert not (layout.challenge_dir(root.cache_dir) / token).exists()



