"""The certbot runner: real child processes, timeouts that kill the whole
process group, what certbot said about a failure as the reason; command lines."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.trial import unittest

from elemta_smtp.acme.runner import (
    CERTBOT_MAIN,
    ProcessRunner,
    RunResult,
    SpawnReactor,
    _short,
    certonly_command,
    renew_command,
)
from elemta_smtp.cache.lineages import Lineage, own_lineage
from elemta_smtp.config import parse_config

PY = sys.executable


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


#: What certbot 5.8 prints when the CA cannot fetch an HTTP-01 answer (seen against Pebble).
CERTBOT_STDOUT = """Account registered.
Requesting a certificate for mail.example.com

Certbot failed to authenticate some domains (authenticator: elemta). The Certificate \
Authority reported these problems:
  Identifier: mail.example.com
  Type:   unauthorized
  Detail: Invalid response from http://mail.example.com/.well-known/acme-challenge/abc: \
returned 404

Hint: The Certificate Authority could not download the challenge answers from
http://<domain>/.well-known/acme-challenge/, served by elemta on :80.

"""
CERTBOT_STDERR = """Saving debug log to /var/lib/elemta/certbot/logs/letsencrypt.log
Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile \
/var/lib/elemta/certbot/logs/letsencrypt.log or re-run Certbot with -v for more details.
"""


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
        script = ("import subprocess, sys, time\n"
                  "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                  "print(p.pid, flush=True)\ntime.sleep(60)")
        pending = runner.run([PY, "-c", script], timeout=300)
        yield task.deferLater(_reactor(), 0.5, lambda: None)
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
        script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                  "print('ready', flush=True)\ntime.sleep(60)")
        pending = runner.run([PY, "-c", script], timeout=10)
        yield task.deferLater(_reactor(), 0.5, lambda: None)  # let it install its handler
        clock.advance(10)
        yield task.deferLater(_reactor(), 0.3, lambda: None)
        assert not pending.called  # SIGTERM ignored
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


def _config(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "elemta.toml"
    text = ('[tls.letsencrypt]\nenabled = true\ndomain = "mail.example.com"\n'
            'email = "admin@example.com"\ncache_dir = "cache"\n' + extra)
    path.write_text(text)
    return parse_config(text, str(path), tmp_path)


def test_certonly_command(tmp_path: Path) -> None:
    """certonly uses the elemta plugin both ways, the config path, dirs in the cache, the ACME server."""
    config = _config(tmp_path, 'directory_url = "https://127.0.0.1:14000/dir"\nkey_type = "rsa"\n')
    argv = certonly_command(config, python="py")
    assert argv[:3] == ["py", "-c", CERTBOT_MAIN]
    text = " ".join(argv)
    for part in ("certonly -a elemta -i elemta", f"--elemta-config {tmp_path / 'elemta.toml'}",
                 "-d mail.example.com", "--cert-name mail.example.com",
                 "--server https://127.0.0.1:14000/dir", "-m admin@example.com --agree-tos",
                 "--non-interactive", "--key-type rsa",
                 f"--config-dir {tmp_path / 'cache/certbot/config'}",
                 f"--work-dir {tmp_path / 'cache/certbot/work'}",
                 f"--logs-dir {tmp_path / 'cache/certbot/logs'}"):
        assert part in text
    assert "--dry-run" not in argv and "--force-renewal" not in argv
    assert "--dry-run" in certonly_command(config, dry_run=True)
    assert "--force-renewal" in certonly_command(config, force=True)


def test_renew_command(tmp_path: Path) -> None:
    """renew names elemta's lineage in its own folders, never sleeps at random, installs with
    the elemta installer and this config, and forces only when asked."""
    config = _config(tmp_path)
    lineage = own_lineage(tmp_path / "cache", "mail.example.com")
    argv = renew_command(config, lineage, python="py")
    text = " ".join(argv)
    assert "renew --cert-name mail.example.com --no-random-sleep-on-renew" in text
    assert " ".join(lineage.dir_args()) in text
    assert f"--config-dir {tmp_path / 'cache/certbot/config'}" in text
    assert f"--installer elemta --elemta-config {tmp_path / 'elemta.toml'}" in text
    assert "--force-renewal" not in argv
    assert renew_command(config, lineage, force=True)[-1] == "--force-renewal"


def test_renew_command_follows_a_recorded_lineage(tmp_path: Path) -> None:
    """A lineage installed from another certbot config folder is renewed there, by its name."""
    config = _config(tmp_path)
    lineage = Lineage("mail.example.com-0001", Path("/etc/letsencrypt"),
                      Path("/var/lib/letsencrypt"), Path("/var/log/letsencrypt"))
    text = " ".join(renew_command(config, lineage, python="py"))
    assert ("--config-dir /etc/letsencrypt --work-dir /var/lib/letsencrypt "
            "--logs-dir /var/log/letsencrypt") in text
    assert "renew --cert-name mail.example.com-0001 " in text
    assert str(tmp_path / "cache") not in text


OWN = own_lineage(Path("/var/lib/elemta"), "mail.example.com")


@pytest.mark.parametrize(("build", "expected"), [
    (lambda c: renew_command(c, OWN), "certbot renew"),
    (lambda c: renew_command(c, OWN, force=True), "certbot renew"),
    (certonly_command, "certbot certonly"),
    (lambda c: certonly_command(c, dry_run=True), "certbot certonly"),
    (lambda c: ["/usr/local/bin/certbot", "--config-dir", "/x", "renew"], "certbot renew"),
    (lambda c: ["/usr/bin/sleep", "60"], "sleep 60"),
], ids=["renew", "forced-renew", "certonly", "dry-run", "certbot-binary", "other-command"])
def test_log_names_the_certbot_verb(tmp_path: Path, build: Any, expected: str) -> None:
    """Timeout and stop log lines say "certbot renew", not "/usr/bin/python3 -c"."""
    assert _short(build(_config(tmp_path))) == expected


def test_certonly_needs_a_config_path() -> None:
    """Without a config file path certbot could not find elemta's settings: say so."""
    config = parse_config('[tls.letsencrypt]\nenabled = true\nemail = "a@example.com"\n')
    with pytest.raises(ValueError, match="-c PATH"):
        certonly_command(config)


def test_environment_passed_through(tmp_path: Path) -> None:
    """The runner hands the daemon's environment (REQUESTS_CA_BUNDLE included) to certbot."""
    runner = ProcessRunner(reactor=cast(SpawnReactor, None), env={"REQUESTS_CA_BUNDLE": "/x.pem"})
    assert runner._env == {"REQUESTS_CA_BUNDLE": "/x.pem"}
    assert ProcessRunner(reactor=cast(SpawnReactor, None))._env == dict(os.environ)


class CancelTests(unittest.TestCase):
    @inlineCallbacks
    def test_cancel_stops_the_child(self) -> Generator[Deferred[Any], Any, None]:
        """Cancelling a run (the daemon stops) ends the child's process group."""
        clock = task.Clock()
        pending = ProcessRunner(_reactor(), clock=clock).run(
            [PY, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
            timeout=300)
        yield task.deferLater(_reactor(), 0.5, lambda: None)
        pending.cancel()
        with pytest.raises(CancelledError):
            yield pending
        deadline = time.monotonic() + 5
        # the child's pid is not known to the test; its process group is gone once no
        # process with our argv remains
        while time.monotonic() < deadline:
            alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith(
                "time.sleep(60)") and "print(os.getpid()" in _cmdline(p)]
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
