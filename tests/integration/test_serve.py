"""``elemta serve`` as a process: the embedded --dev default, the pid file,
start-up refusals and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import (
    Setup,
    client_context,
    elemta_command,
    in_shell,
    running_daemon,
    stop_process,
    wait_for_port,
)

DEV_PORTS = (2525, 4465, 8080)


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0




@contextmanager
def dev_daemon(data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(data_dir.parent / "dev.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(elemta_command("serve", "--dev", "--data-dir", str(data_dir)),
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for port in DEV_PORTS:
            wait_for_port("127.0.0.1", port)
        yield process
    finally:
        stop_process(process)
        log.close()


def test_dev_default_accepts_mail_over_starttls_and_implicit_tls(tmp_path: Path) -> None:
    """`elemta serve --dev` needs no config: STARTTLS on 2525 and TLS on 4465 deliver to its data dir."""
    if any(port_taken(p) for p in DEV_PORTS):
        pytest.skip(f"another program uses one of the --dev ports {DEV_PORTS}")
    data = tmp_path / "data"
    with dev_daemon(data):
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as smtp:
            smtp.starttls(context=client_context())
            smtp.sendmail("me@localhost", ["alice@example.com"], b"Subject: one\r\n\r\nvia starttls\r\n")
        with smtplib.SMTP_SSL("127.0.0.1", 4465, timeout=10, context=client_context()) as smtps:
            smtps.sendmail("me@localhost", ["bob@localhost"], b"Subject: two\r\n\r\nvia smtps\r\n")
        assert (data / "elemta.pid").exists()
    alice = list((data / "mail" / "example.com" / "alice" / "new").iterdir())
    bob = list((data / "mail" / "localhost" / "bob" / "new").iterdir())
    assert len(alice) == 1 and alice[0].read_bytes().endswith(b"\r\n\r\nvia starttls\r\n")
    assert len(bob) == 1 and b"with ESMTPS" in bob[0].read_bytes()
    assert (data / "cache" / "bootstrap.pem").exists()
    assert not (data / "elemta.pid").exists()


def test_sigterm_stops_cleanly_and_removes_the_pid_file(tmp_path: Path) -> None:
    """SIGTERM ends the daemon with status 0, closes its ports and removes its pid file."""
    setup = Setup(tmp_path)
    setup.write()
    with running_daemon(setup) as daemon:
        assert setup.pid_file.read_text().strip() == str(daemon.pid)
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=15) == 0
        assert "stopped" in daemon.log()
    assert not setup.pid_file.exists()
    assert not port_taken(setup.smtp_port)


def test_a_taken_port_is_refused_with_a_sentence(tmp_path: Path) -> None:
    """When the SMTP port is in use the daemon says so, names the address, and exits 1."""
    setup = Setup(tmp_path)
    setup.write()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", setup.smtp_port))
        squatter.listen()
        result = subprocess.run(elemta_command("serve", "-c", str(setup.config_path)),
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"cannot listen for SMTP on 127.0.0.1:{setup.smtp_port}" in result.stderr
    assert "already in use" in result.stderr
    assert not setup.pid_file.exists()


def test_a_second_daemon_with_the_same_pid_file_is_refused(tmp_path: Path) -> None:
    """A second daemon on the same pid file (and another cache_dir) names the running pid and
    exits without taking over, before writing anything: its cache_dir (bootstrap.pem,
    folders) is never created."""
    first = Setup(tmp_path / "one")
    first.write()
    second = Setup(tmp_path / "two")
    second.write({"server": {"pid_file": str(first.pid_file)}})
    with running_daemon(first) as daemon:
        result = subprocess.run(elemta_command("serve", "-c", str(second.config_path)),
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 1
        assert f"another elemta is running with pid {daemon.pid}" in result.stderr
        assert first.pid_file.read_text().strip() == str(daemon.pid)
        assert not port_taken(second.smtp_port)
    assert not second.cache_dir.exists()


def test_a_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    """A pid file left by a dead process does not stop the daemon from starting."""
    setup = Setup(tmp_path)
    setup.write()
    setup.pid_file.write_text("999999999\n")
    with running_daemon(setup) as daemon:
        assert setup.pid_file.read_text().strip() == str(daemon.pid)


@contextmanager
def dev_ports_free() -> Iterator[None]:
    if any(port_taken(p) for p in DEV_PORTS):
        pytest.skip(f"another program uses one of the --dev ports {DEV_PORTS}")
    yield


def test_sigint_stops_a_daemon_started_with_sigint_ignored(tmp_path: Path) -> None:
    """`elemta serve --dev` started from a script in the background inherits SIGINT ignored
    (here: `trap '' INT` before exec); SIGINT still stops it gracefully: exit 0, "stopped"
    logged, pid file removed."""
    probe = subprocess.run(in_shell("trap '' INT", ["cat", "/proc/self/status"]),
                           capture_output=True, text=True, check=True).stdout
    sig_ign = next(int(line.split()[1], 16) for line in probe.splitlines()
                   if line.startswith("SigIgn:"))
    assert sig_ign & (1 << (signal.SIGINT - 1)), "the shell did not pass SIGINT on ignored"
    data = tmp_path / "data"
    log_path = tmp_path / "dev.log"
    with dev_ports_free(), open(log_path, "wb") as log:
        process = subprocess.Popen(
            in_shell("trap '' INT", elemta_command("serve", "--dev", "--data-dir", str(data))),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            for port in DEV_PORTS:
                wait_for_port("127.0.0.1", port)
            assert (data / "elemta.pid").read_text().strip() == str(process.pid)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0, log_path.read_text()
        finally:
            stop_process(process)
    assert "stopped" in log_path.read_text()
    assert not (data / "elemta.pid").exists()


def test_dev_errors_speak_of_dev_options_not_config_keys(tmp_path: Path) -> None:
    """What `elemta serve --dev` prints when it cannot start names --data-dir and its fixed
    ports, never a config key it has no file for: a second --dev on the same data dir, one
    on another data dir (ports taken), and a data dir that cannot be created."""
    data = tmp_path / "data"

    def dev(data_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(elemta_command("serve", "--dev", "--data-dir", str(data_dir)),
                              capture_output=True, text=True, timeout=30, check=False)

    (tmp_path / "file").write_text("not a folder")
    blocked = dev(tmp_path / "file" / "data")
    assert blocked.returncode == 1
    assert "cannot create the cache directory" in blocked.stderr
    assert "use another --data-dir" in blocked.stderr
    with dev_ports_free(), dev_daemon(data) as first:
        same = dev(data)
        other = dev(tmp_path / "other")
    assert same.returncode == 1
    assert f"another elemta is running with pid {first.pid}" in same.stderr
    assert "use another --data-dir" in same.stderr
    assert other.returncode == 1
    assert "already in use" in other.stderr
    assert "--dev` always uses 127.0.0.1:2525, 4465 and 8080" in other.stderr
    for result in (blocked, same, other):
        assert "[server]" not in result.stderr and "[tls" not in result.stderr, result.stderr
    # the bootstrap warning of the --dev daemon that ran speaks of --dev, not of keys to set
    started = (tmp_path / "dev.log").read_text()
    assert "SERVING A SELF-SIGNED BOOTSTRAP CERTIFICATE" in started
    assert "That is what --dev does" in started and "[tls" not in started, started
