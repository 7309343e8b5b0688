"""Starting and stopping the servers under test, reading their CPU time, and
giving each one a fresh place to deliver into.

Every server runs as its own process (its CPU time is then its own):
elemta as ``python -m elemta_smtp serve -c CONFIG``, each peer as
``python -m benchmarks.peer_NAME``. All listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.peercli import READY
from tests.support import Setup, free_port

SERVERS = ("elemta", "aiosmtpd", "twisted")
#: Every name ``--servers`` takes: the default ones, and elemta with ``[metrics]`` on (its
#: /metrics scraped once per measurement), to measure what counting costs.
CHOICES = (*SERVERS, "elemta-metrics")
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class BenchmarkError(Exception):
    """The benchmark cannot go on; the message says why and what to do."""


@dataclass
class RunningServer:
    """A server process under test and where it listens and delivers."""

    name: str
    process: subprocess.Popen[bytes]
    plain_port: int
    tls_port: int
    maildir: Path
    log_path: Path
    metrics_port: int | None = None  # elemta-metrics: where GET /metrics answers

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process (every thread) so far."""
        return read_cpu_seconds(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def parse_proc_stat(text: str, ticks_per_second: int) -> float:
    """utime + stime in seconds from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``: state is then field 0, utime 11, stime 12.
    """
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def read_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return parse_proc_stat(f.read(), os.sysconf("SC_CLK_TCK"))


def count_delivered(maildir: Path) -> int:
    """Files in every ``new/`` folder under ``maildir`` (any Maildir layout)."""
    count = 0
    for folder, _dirs, files in os.walk(maildir):
        if os.path.basename(folder) == "new":
            count += len(files)
    return count


def can_make_filesystems() -> str | None:
    """None if ``--fresh-fs`` can work here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "--fresh-fs mounts loop images: run as root, or leave it out to use fresh folders"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"--fresh-fs needs {tool}: install e2fsprogs/mount, or leave --fresh-fs out"
    return None


@contextmanager
def fresh_folder(path: Path, loop_image_bytes: int = 0) -> Iterator[Path]:
    """A new empty folder at ``path``; with ``loop_image_bytes`` a new ext4
    filesystem on a zero-filled loop image is mounted there, and unmounted after."""
    path.mkdir(parents=True)
    if not loop_image_bytes:
        yield path
        return
    image = path.with_name(path.name + ".img")
    chunk = bytes(1 << 20)
    with open(image, "wb") as f:
        for _ in range(-(-loop_image_bytes // len(chunk))):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                        str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        image.unlink(missing_ok=True)
        raise BenchmarkError(f"cannot make a loop filesystem at {path}: "
                             f"{exc.stderr.decode(errors='replace').strip()}") from None
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)
        image.unlink(missing_ok=True)


def is_checkout_server(name: str) -> bool:
    """``elemta@DIR``: the elemta of another checkout, to compare two versions in one run."""
    base, at, folder = name.partition("@")
    return base == "elemta" and bool(at) and (Path(folder) / "elemta_smtp" / "__main__.py").is_file()


def _command(name: str, workdir: Path, maildir: Path, cert: Path, key: Path, *,
             metrics_port: int = 0) -> tuple[list[str], int, int, str]:
    if name in ("elemta", "elemta-metrics") or is_checkout_server(name):
        setup = Setup(root=workdir)
        setup.write({
            "delivery": {"maildir_root": str(maildir)},
            "tls": {"cert_file": str(cert), "key_file": str(key)},
            "server": {"max_connections": 10_000},
            **({"metrics": {"listen_addr": f"127.0.0.1:{metrics_port}"}}
               if name == "elemta-metrics" else {}),
        })
        return ([sys.executable, "-m", "elemta_smtp", "serve", "-c", str(setup.config_path)],
                setup.smtp_port, setup.smtps_port, "elemta ready")
    if name in SERVERS:
        plain, tls = free_port(), free_port()
        return ([sys.executable, "-m", f"benchmarks.peer_{name}", "--plain-port", str(plain),
                 "--tls-port", str(tls), "--maildir", str(maildir), "--cert", str(cert),
                 "--key", str(key)], plain, tls, READY)
    raise BenchmarkError(f"unknown server {name!r}: choose from {', '.join(CHOICES)}")


@contextmanager
def running_server(name: str, workdir: Path, maildir: Path, cert: Path, key: Path
                   ) -> Iterator[RunningServer]:
    """Start server ``name``, wait until it says it is ready, and always stop it
    afterwards (SIGTERM, then SIGKILL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port() if name == "elemta-metrics" else None
    command, plain, tls, ready = _command(name, workdir, maildir, cert, key,
                                          metrics_port=metrics_port or 0)
    log_path = workdir / f"{name.replace('/', '_')}.log"
    # `python -m` looks in its working folder first: elemta@DIR runs DIR's elemta_smtp
    cwd = Path(name.partition("@")[2]) if is_checkout_server(name) else REPO_ROOT
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    server = RunningServer(name, process, plain, tls, maildir, log_path, metrics_port)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while ready not in server.log():
            if process.poll() is not None:
                raise BenchmarkError(f"{name} exited with status {process.returncode} before it was "
                                     f"ready; its log ({log_path}):\n{server.log()}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{name} did not log {ready!r} within {READY_TIMEOUT:g}s; "
                                     f"its log ({log_path}):\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        stop(process)


def accepted_count(metrics_port: int) -> float:
    """``elemta_messages_total{result="accepted"}`` from one real scrape of GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "elemta_messages_total" and sample.labels == {"result": "accepted"}:
                return sample.value
    raise BenchmarkError(f"no elemta_messages_total{{result=\"accepted\"}} on port {metrics_port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL; never raises."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise
