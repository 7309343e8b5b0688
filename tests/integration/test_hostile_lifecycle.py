"""Hostile conditions for the daemon process: SIGTERM in the middle of messages, a second
daemon on the same pid file, a port already taken, and broken config files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from elemta_smtp.smtp import replies
from tests.integration.test_hostile import Wire, all_stored, greeted, maildir, open_data
from tests.support import Daemon, Setup, elemta_command, running_daemon

SHUTDOWN = 2.0  # shutdown_timeout for these daemons, seconds
EXIT_CONFIG = 78
BODY = (b"x" * 76 + b"\r\n") * 50  # 3.9 KiB of message text


def stopping_setup(root: Path) -> Setup:
    setup = Setup(root)
    setup.write({"server": {"shutdown_timeout": f"{SHUTDOWN:g}s"}})
    return setup


def sigterm_and_wait(daemon: Daemon, timeout: float) -> float:
    """Send SIGTERM and wait for the process to exit; returns how long it took."""
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(timeout=timeout)
    return time.monotonic() - started


# --- SIGTERM while messages are in flight ------------------------------------------------------

def test_sigterm_mid_data_lets_the_message_finish(tmp_path: Path) -> None:
    """SIGTERM while a client is inside DATA: the client may finish, gets 250 then 421 4.3.2,
    the message is complete in new/, the process exits and removes its pid file."""
    setup = stopping_setup(tmp_path)
    with running_daemon(setup) as daemon, greeted(setup.smtp_port) as wire:
        idle = greeted(setup.smtp_port)
        open_data(wire, ["finish@example.com"])
        wire.send(b"Subject: mid-data\r\n\r\nfirst half\r\n")
        daemon.process.send_signal(signal.SIGTERM)
        assert idle.wait_closed() == replies.SHUTTING_DOWN  # idle sessions are told at once
        idle.close()
        wire.send(b"second half\r\n.\r\n")
        assert wire.reply().startswith(b"250 2.0.0 OK: queued as ")
        assert wire.reply() == replies.SHUTTING_DOWN
        assert wire.wait_closed() == b""
        daemon.process.wait(timeout=SHUTDOWN + 3)
        [stored] = maildir(setup, "finish")
        assert stored.read_bytes().endswith(b"\r\n\r\nfirst half\r\nsecond half\r\n")
        assert not setup.pid_file.exists()


def test_sigterm_with_a_stalled_message_drops_it_after_shutdown_timeout(tmp_path: Path) -> None:
    """A client that stops in the middle of DATA does not keep the daemon alive: after
    shutdown_timeout the connection is dropped without 250, nothing is in new/, the process
    exits (within shutdown_timeout + 2 s) and its pid file is gone."""
    setup = stopping_setup(tmp_path)
    with running_daemon(setup) as daemon, greeted(setup.smtp_port) as wire:
        open_data(wire, ["stalled@example.com"])
        wire.send(b"Subject: stalled\r\n\r\nhalf a message")
        took = sigterm_and_wait(daemon, SHUTDOWN + 5)
        assert SHUTDOWN - 0.5 < took < SHUTDOWN + 2, took
        assert wire.wait_closed() == b""
        assert maildir(setup, "stalled") == [] and maildir(setup, "stalled", "tmp") == []
        assert not setup.pid_file.exists()
        assert "shutdown timeout: dropping 1 SMTP connections" in daemon.log()


def test_sigterm_under_load_every_250_is_stored_and_nothing_else(tmp_path: Path) -> None:
    """Four clients send messages back to back while the daemon gets SIGTERM: each message
    answered 250 is complete in new/, and no message without a 250 is there."""
    setup = stopping_setup(tmp_path)
    accepted: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            with greeted(setup.smtp_port) as wire:
                for i in range(10_000):
                    token = b"msg-%d-%d" % (n, i)
                    open_data(wire, ["load@example.com"])
                    wire.send(b"Subject: " + token + b"\r\n\r\n" + BODY + token + b"\r\n.\r\n")
                    if not wire.reply().startswith(b"250 "):
                        return
                    with lock:
                        accepted.append(token)
        except (ConnectionError, AssertionError, OSError) as exc:
            errors.append(exc)  # 421 or a closed connection: the daemon is stopping

    with running_daemon(setup) as daemon:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(accepted) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        sigterm_and_wait(daemon, SHUTDOWN + 5)
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
    stored = {}
    for path in all_stored(setup):
        data = path.read_bytes()
        token = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
        assert data.endswith(BODY + token + b"\r\n"), f"incomplete: {path}"
        stored[token] = path
    assert len(accepted) >= 20, errors
    assert sorted(stored) == sorted(accepted)


# --- pid file and ports ------------------------------------------------------------------------

def run_elemta(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def test_second_daemon_on_the_same_pid_file_refuses_to_start(tmp_path: Path) -> None:
    """A second daemon with the same pid_file (other ports) exits 1 naming the pid file and the
    running pid; the first keeps running and keeps its pid file."""
    first = Setup(tmp_path / "first")
    first.write()
    second = Setup(tmp_path / "second")
    second.write({"server": {"pid_file": str(first.pid_file)}})
    with running_daemon(first) as daemon:
        result = run_elemta("serve", "-c", str(second.config_path))
        assert result.returncode == 1, result
        assert (f"{first.pid_file}: another elemta is running with pid {daemon.pid}; stop it first"
                in result.stderr), result.stderr
        assert daemon.process.poll() is None
        assert first.pid_file.read_text().strip() == str(daemon.pid)
        with greeted(first.smtp_port) as wire:
            assert wire.command(b"NOOP") == replies.OK


def test_stale_pid_file_of_a_dead_process_does_not_block_start(tmp_path: Path) -> None:
    """A pid file left by a daemon that died (its pid no longer exists) is taken over."""
    setup = Setup(tmp_path)
    setup.write()
    dead = subprocess.Popen(["true"])
    dead.wait()
    setup.pid_file.write_text(f"{dead.pid}\n")
    with running_daemon(setup) as daemon:
        assert setup.pid_file.read_text().strip() == str(daemon.pid)


def test_stale_pid_file_naming_another_program_does_not_block_start(tmp_path: Path) -> None:
    """A pid file naming a live process that is not elemta (a pid reused after a crash) does not
    stop a start: the daemon takes the pid file over."""
    setup = Setup(tmp_path)
    setup.write()
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            setup.pid_file.write_text(f"{other.pid}\n")
            with running_daemon(setup) as daemon:
                assert setup.pid_file.read_text().strip() == str(daemon.pid)
        finally:
            other.kill()


def test_port_in_use_exits_with_a_clear_sentence(tmp_path: Path) -> None:
    """When the SMTP port is taken the daemon exits 1 with one sentence naming the listener,
    the address and the cause, and it leaves no pid file."""
    setup = Setup(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        setup.smtp_port = port
        setup.write()
        result = run_elemta("serve", "-c", str(setup.config_path))
    assert result.returncode == 1
    assert (f"error: cannot listen for SMTP on 127.0.0.1:{port}: the port is already in use by "
            "another program (see `ss -ltnp`)\n") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not setup.pid_file.exists()


# --- broken config files -------------------------------------------------------------------------

# (file text, fragments the message must contain; "{path}" is the config file)
BAD_CONFIGS = {
    "unknown-key": ('[server]\nhostname = "a.example"\nmax_conections = 5\n',
                    ['{path}:3:', "[server.max_conections]", 'did you mean "max_connections"']),
    "unknown-section": ('[servr]\nhostname = "a.example"\n',
                        ["{path}:1:", "[servr]", 'did you mean "server"']),
    "bad-duration": ('[server]\n\nidle_timeout = "5 parsecs"\n',
                     ["{path}:3:", "[server.idle_timeout]", '"90s"']),
    "out-of-range": ("[server]\nmax_recipients = -1\n",
                     ["{path}:2:", "[server.max_recipients]", "from 1 to"]),
    "bad-choice": ('[delivery]\nbare_newline = "maybe"\n',
                   ["{path}:2:", "[delivery.bare_newline]", '"normalize", "reject"']),
    "wrong-type": ('[server]\nmax_connections = "five"\n',
                   ["{path}:2:", "[server.max_connections]", "whole number"]),
    "bad-address": ('[server]\nlisten_addr = "127.0.0.1:99999"\n',
                    ["{path}:2:", "[server.listen_addr]", "65535"]),
    "not-toml": ('[server\nhostname = "a"\n', ["{path}:1:", "not valid TOML"]),
    "duplicate-table": ('[server]\nhostname = "a.example"\n[server]\nmax_errors = 3\n',
                        ["{path}:3:", "[server]", "written twice (first on line 1)"]),
    "not-utf8": ('[server]\nhostname = "\udcff"\n', ["{path}", "utf-8"]),
}
DUPLICATE_KEY = ('[server]\nhostname = "a.example"\nhostname = "b.example"\n',
                 ["{path}:3:", "[server.hostname]"])


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


CASES = [pytest.param(text, fragments, id=name) for name, (text, fragments) in BAD_CONFIGS.items()]
CASES.append(pytest.param(*DUPLICATE_KEY, id="duplicate-key"))


@pytest.mark.parametrize(("text", "fragments"), CASES)
@pytest.mark.parametrize("command", [["serve"], ["config", "check"]], ids=["serve", "check"])
def test_bad_config_exits_78_naming_file_line_and_key(tmp_path: Path, text: str,
                                                      fragments: list[str], command: list[str]) -> None:
    """``elemta serve`` and ``elemta config check`` refuse a broken file with exit 78 (EX_CONFIG),
    a message naming the file, line and key, no traceback, and nothing started."""
    path = write_config(tmp_path, text)
    result = run_elemta(*command, "-c", str(path))
    assert result.returncode == EXIT_CONFIG, result
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    for fragment in fragments:
        assert fragment.format(path=path) in first, result.stderr


def test_missing_config_file_exits_78_and_says_what_to_do(tmp_path: Path) -> None:
    """A config path that does not exist: exit 78 and a sentence naming it and the ways to fix it."""
    path = tmp_path / "nowhere.toml"
    result = run_elemta("serve", "-c", str(path))
    assert result.returncode == EXIT_CONFIG
    assert f"{path}: no such file" in result.stderr and "ELEMTA_CONFIG" in result.stderr


def test_bad_config_leaves_no_pid_file_and_no_listener(tmp_path: Path) -> None:
    """A daemon refused for its config neither writes the pid file nor binds its port."""
    setup = Setup(tmp_path)
    setup.write({"server": {"max_errors": 0}})
    result = run_elemta("serve", "-c", str(setup.config_path))
    assert result.returncode == EXIT_CONFIG
    assert not setup.pid_file.exists()
    with pytest.raises(ConnectionRefusedError):
        Wire(setup.smtp_port, timeout=1).close()


def test_env_config_is_used_when_no_c_is_given(tmp_path: Path) -> None:
    """ELEMTA_CONFIG names the file when -c is absent: its problems are reported with its path."""
    path = write_config(tmp_path, "[server]\nmax_errors = 0\n")
    result = subprocess.run(elemta_command("config", "check"), capture_output=True, text=True,
                            timeout=15, check=False, env={**os.environ, "ELEMTA_CONFIG": str(path)})
    assert result.returncode == EXIT_CONFIG
    assert f"{path}:2: [server.max_errors]" in result.stderr

