"""A daemon in a cluster as it starts: a password file it cannot read stops it with a
sentence; a Redis that refuses the password (or is not there) leaves it serving SMTP, said
once, with the password masked everywhere."""

from __future__ import annotations

import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_metrics_endpoint import scrape
from tests.redis_server import RedisServer, missing_redis, running_redis
from tests.support import Setup, elemta_command, free_port, running_daemon, wait_until


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    reason = missing_redis()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path / "redis", password="the-real-one") as server:
        yield server


def test_unreadable_password_file_stops_the_start(tmp_path: Path) -> None:
    """[cluster] password_file that cannot be read: exit 1 with the file named, no pid file."""
    setup = Setup(tmp_path)
    setup.write({"cluster": {"redis_url": "redis://127.0.0.1:6379/0",
                             "password_file": str(tmp_path / "missing.pass")}})
    result = subprocess.run(elemta_command("serve", "-c", str(setup.config_path)),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"cannot read [cluster] password_file {tmp_path / 'missing.pass'}" in result.stderr
    assert not setup.pid_file.exists()


def test_wrong_password_is_said_once_masked_and_smtp_works(redis_server: RedisServer,
                                                           tmp_path: Path) -> None:
    """With a password Redis refuses, the daemon serves SMTP, logs the refusal once (not at
    every retry of its one-second periodic check), and never writes the password."""
    setup = Setup(tmp_path / "node")
    url = f"redis://:a-wrong-one@127.0.0.1:{redis_server.port}/0"
    setup.write({"cluster": {"redis_url": url, "sync_interval": "1s"}})
    with running_daemon(setup) as daemon:
        daemon.wait_for_log("is unreachable (invalid username-password pair")
        with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
            assert client.noop()[0] == 250
        time.sleep(3)  # three periodic checks and subscription retries fail quietly
        log = daemon.log()
    assert log.count("is unreachable") == 1, log
    assert "a-wrong-one" not in log
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in log


def test_the_scrape_says_whether_redis_answers(redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    """With [metrics] on, elemta_cluster_redis_up is 1 while Redis answers, 0 once it stops
    (the node serves on), and 1 again when it is back."""
    setup = Setup(tmp_path / "node")
    port = free_port()
    setup.write({"cluster": {"redis_url": redis_server.url, "sync_interval": "1s"},
                 "metrics": {"listen_addr": f"127.0.0.1:{port}"}})

    def redis_up() -> float | None:
        return scrape(port)[0].get(("elemta_cluster_redis_up", frozenset()))

    with running_daemon(setup) as daemon:
        wait_until(lambda: redis_up() == 1.0, "redis_up 1", timeout=10, daemon=daemon)
        redis_server.stop()
        wait_until(lambda: redis_up() == 0.0, "redis_up 0", timeout=10, daemon=daemon)
        with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
            assert client.noop()[0] == 250
        redis_server.start()
        wait_until(lambda: redis_up() == 1.0, "redis_up 1 again", timeout=15, daemon=daemon)
