"""The pid file: which elemta runs, and who may take the file over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elemta_smtp.daemon import (
    PidFileError,
    check_pid_file,
    is_elemta,
    is_elemta_cmdline,
    live_pid,
    remove_pid_file,
    write_pid_file,
)


def test_write_then_read_back(tmp_path: Path) -> None:
    """Our own pid is written atomically and read back as a live elemta when the cmdline says so."""
    pid_file = tmp_path / "run" / "elemta.pid"
    write_pid_file(pid_file, os.getpid())
    assert pid_file.read_text() == f"{os.getpid()}\n"
    assert [p.name for p in pid_file.parent.iterdir()] == ["elemta.pid"]


@pytest.mark.parametrize("content", ["", "garbage", "-5", "1", "999999999"], ids=repr)
def test_unusable_or_dead_pids_are_not_live(tmp_path: Path, content: str) -> None:
    """Empty, non-numeric, init's and dead pids never count as a running daemon."""
    pid_file = tmp_path / "elemta.pid"
    pid_file.write_text(content)
    assert live_pid(pid_file) is None
    check_pid_file(pid_file, os.getpid())


def test_a_reused_pid_of_another_program_is_not_elemta(tmp_path: Path) -> None:
    """A pid file naming a live process that is not elemta (pid reuse) does not block a start."""
    code = "import time; print('up', flush=True); time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as other:
        try:
            assert other.stdout is not None
            assert other.stdout.readline() == b"up\n"
            pid_file = tmp_path / "elemta.pid"
            pid_file.write_text(str(other.pid))
            assert not is_elemta(other.pid)
            assert live_pid(pid_file) is None
        finally:
            other.kill()


def test_a_live_elemta_blocks_another(tmp_path: Path) -> None:
    """A pid file naming a running elemta refuses a second daemon, naming the pid."""
    code = "import time; print('up', flush=True); time.sleep(30)"
    argv = [sys.executable, "-c", code, "elemta_smtp"]  # looks like `python -m elemta_smtp`
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as daemon:
        try:
            assert daemon.stdout is not None
            assert daemon.stdout.readline() == b"up\n"  # exec'd: /proc shows its own cmdline now
            pid_file = tmp_path / "elemta.pid"
            pid_file.write_text(str(daemon.pid))
            with pytest.raises(PidFileError, match=f"another elemta is running with pid {daemon.pid}"):
                write_pid_file(pid_file, os.getpid())
            assert pid_file.read_text() == str(daemon.pid)
        finally:
            daemon.kill()


def test_unwritable_location_says_what_to_do(tmp_path: Path) -> None:
    """A pid file whose folder cannot be made gives a sentence naming the key to change."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PidFileError, match=r"create its folder or set a different \[server\] pid_file"):
        write_pid_file(blocker / "elemta.pid", os.getpid())


def test_remove_only_our_own(tmp_path: Path) -> None:
    """Stopping removes the pid file only while it still names this process."""
    pid_file = tmp_path / "elemta.pid"
    pid_file.write_text("12345\n")
    remove_pid_file(pid_file, os.getpid())
    assert pid_file.exists()
    pid_file.write_text(f"{os.getpid()}\n")
    remove_pid_file(pid_file, os.getpid())
    assert not pid_file.exists()


@pytest.mark.parametrize(("cmdline", "expected"), [
    (b"/usr/bin/python3\0/usr/local/bin/elemta\0serve\0-c\0/etc/elemta/elemta.toml\0", True),
    (b"/opt/elemta/bin/python\0-m\0elemta_smtp\0serve\0", True),
    (b"elemta\0serve\0", True),
    (b"/opt/elemta/bin/python\0/opt/elemta/bin/certbot\0renew\0", False),
    (b"/home/me/elemta/.venv/bin/python\0-m\0pytest\0", False),
    (b"/usr/sbin/nginx\0", False),
], ids=["console-script", "python-m", "bare", "certbot-from-elemta-venv", "pytest-in-checkout", "other"])
def test_what_counts_as_an_elemta_daemon(cmdline: bytes, expected: bool) -> None:
    """Only the daemon's own command line counts, not any program run from a path with "elemta" in it."""
    assert is_elemta_cmdline(cmdline) is expected
