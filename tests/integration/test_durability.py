"""Crash durability of the real daemon: SIGKILL while clients are sending.

Every message the server answered 250 must be complete and byte-exact in each
recipient's new/; no file in new/ may be partial or unknown; a message cut off
mid-DATA must not be in new/. (SIGKILL tests the process dying, not the power
going out: the page cache survives. Power loss is covered by the fsync order
pinned in tests/unit/test_maildir.py.)"""

from __future__ import annotations

import re
import smtplib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import Daemon, Setup, running_daemon

pytestmark = pytest.mark.slow

USERS = ["alice", "bob", "carol"]
CLIENTS = 4
ROUND_TIMEOUT = 60.0
MID = re.compile(rb"^Message-ID: <([^>]+)>\r$", re.MULTILINE)


def body(msgid: str, n: int) -> bytes:
    """A message of 1 KiB to ~300 KiB with 8-bit bytes and a leading-dot line."""
    lines = [f"Message-ID: <{msgid}>".encode(), b"Subject: durability", b"", b".dot line \xe9"]
    size = 1024 * (1 + (n * 37) % 300)
    filler = (f"{msgid} ".encode() + bytes(range(0x80, 0x100)))[:200]
    lines += [filler] * (size // 202)
    lines.append(b"END " + msgid.encode())
    return b"\r\n".join(lines) + b"\r\n"


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged (thread-safe)."""

    sent: dict[str, tuple[bytes, tuple[str, ...]]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sent(self, msgid: str, data: bytes, rcpts: tuple[str, ...]) -> None:
        with self.lock:
            self.sent[msgid] = (data, rcpts)

    def record_ack(self, msgid: str) -> None:
        with self.lock:
            self.acked.add(msgid)

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acked)


def client_loop(port: int, name: str, ledger: Ledger, stop: threading.Event) -> None:
    """Send messages over one connection after another until stopped or the server dies.
    A Message-ID is recorded as acknowledged only after the 250 for DATA."""
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
                for _ in range(5):
                    if stop.is_set():
                        return
                    n += 1
                    msgid = f"{name}.{n}@client.test"
                    rcpts = tuple(f"{u}@example.com" for u in USERS[: 1 + n % len(USERS)])
                    data = body(msgid, n)
                    ledger.record_sent(msgid, data, rcpts)
                    client.sendmail("sender@client.test", list(rcpts), data)
                    ledger.record_ack(msgid)
        except (OSError, smtplib.SMTPException):
            return  # the server is gone (or going): stop


def start_cut_off_message(port: int, msgid: str) -> socket.socket:
    """Open a session and send half of a DATA body; return the socket (still open)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = sock.makefile("rb")

    def reply() -> int:
        while True:
            line = reader.readline()
            if not line:
                raise AssertionError("server closed the connection")
            if line[3:4] != b"-":
                return int(line[:3])

    assert reply() == 220
    for command, expected in ((b"EHLO client.test", 250), (b"MAIL FROM:<sender@client.test>", 250),
                              (b"RCPT TO:<alice@example.com>", 250), (b"DATA", 354)):
        sock.sendall(command + b"\r\n")
        assert reply() == expected, command
    data = body(msgid, 299)
    sock.sendall(data[: len(data) // 2])
    return sock


def stored_messages(setup: Setup, sub: str) -> list[tuple[str, Path, bytes]]:
    """(user, path, bytes) of every file in each user's ``sub`` folder."""
    found = []
    for user in USERS:
        folder = setup.maildir_root / "example.com" / user / sub
        if folder.exists():
            found += [(user, p, p.read_bytes()) for p in sorted(folder.iterdir())]
    return found


def without_received(stored: bytes) -> bytes:
    """The message after the Received header elemta prepends."""
    assert stored.startswith(b"Received: "), stored[:80]
    end = 0
    while True:
        end = stored.index(b"\r\n", end) + 2
        if stored[end:end + 1] not in (b" ", b"\t"):
            return stored[end:]


def crash_round(daemon: Daemon, ledger: Ledger, label: str, min_acked: int) -> str:
    """Run clients, cut one DATA off half-way, SIGKILL the daemon; return the cut-off Message-ID."""
    stop = threading.Event()
    port = daemon.setup.smtp_port
    threads = [threading.Thread(target=client_loop, args=(port, f"{label}-c{i}", ledger, stop), daemon=True)
               for i in range(CLIENTS)]
    start_acked = ledger.ack_count()
    for t in threads:
        t.start()
    cut_id = f"{label}-cut@client.test"
    sock = None
    try:
        deadline = time.monotonic() + ROUND_TIMEOUT
        while ledger.ack_count() - start_acked < min_acked:
            assert time.monotonic() < deadline, f"only {ledger.ack_count() - start_acked} messages in time"
            assert daemon.process.poll() is None, daemon.log()
            time.sleep(0.05)
        sock = start_cut_off_message(port, cut_id)
        daemon.process.kill()  # SIGKILL while the clients are mid-stream
        daemon.process.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        if sock is not None:
            sock.close()
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"
    return cut_id


def check_maildirs(setup: Setup, ledger: Ledger, cut_ids: list[str]) -> None:
    stored = stored_messages(setup, "new")
    copies: dict[tuple[str, str], int] = {}
    for user, path, data in stored:
        match = MID.search(data)
        assert match, f"{path} has no Message-ID: partial or foreign file"
        msgid = match.group(1).decode()
        assert msgid not in cut_ids, f"{path}: the message cut off mid-DATA reached new/"
        assert msgid in ledger.sent, f"{path}: {msgid} was never sent"
        sent, rcpts = ledger.sent[msgid]
        assert without_received(data) == sent, f"{path} is not byte-exact"
        assert f"{user}@example.com" in rcpts
        copies[msgid, user] = copies.get((msgid, user), 0) + 1
    for msgid in ledger.acked:
        for rcpt in ledger.sent[msgid][1]:
            user = rcpt.split("@")[0]
            assert copies.get((msgid, user)) == 1, f"acknowledged {msgid} missing or doubled for {user}"


def test_sigkill_mid_stream_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """Two rounds of: four clients sending, one DATA cut off half-way, SIGKILL, restart.
    Every message answered 250 is byte-exact in new/ of each recipient exactly once, nothing
    in new/ is partial or unacknowledged-and-cut-off, and the restarted daemon delivers again."""
    setup = Setup(tmp_path)
    setup.write()
    ledger = Ledger()
    cut_ids = []
    for label in ("r1", "r2"):
        with running_daemon(setup) as daemon:
            cut_ids.append(crash_round(daemon, ledger, label, min_acked=20))
        check_maildirs(setup, ledger, cut_ids)
    with running_daemon(setup) as daemon:
        with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:
            data = body("after@client.test", 1)
            ledger.record_sent("after@client.test", data, ("alice@example.com",))
            client.sendmail("sender@client.test", ["alice@example.com"], data)
            ledger.record_ack("after@client.test")
        assert daemon.process.poll() is None
    check_maildirs(setup, ledger, cut_ids)
    assert len(ledger.acked) >= 41
