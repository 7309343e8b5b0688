"""A real full disk under the real daemon: ``maildir_root`` on a small filesystem of its own
(a size-limited tmpfs, else a loop-mounted ext4; needs root to mount, skipped otherwise).

Clients send concurrently until the disk is full. Every message is either answered 250 and
byte-complete in each recipient's new/, or answered 451 and in no new/; nothing is left in
tmp/; the daemon keeps answering; once space is back the deferred messages are delivered."""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import Setup, running_daemon

FS_SIZE = 4 * 1024 * 1024
LEFT_FREE = 384 * 1024  # what the filler file leaves for the clients
CLIENTS = 4
PER_CLIENT = 10
USERS = ("alice", "bob")
MID = re.compile(rb"^Message-ID: <([^>]+)>\r$", re.MULTILINE)


def _run(*command: str) -> str:
    """Run ``command``; returns "" on success, else why it failed."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"{command[0]}: {exc}"
    return "" if result.returncode == 0 else f"{' '.join(command)}: {result.stderr.strip()}"


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A mounted filesystem of FS_SIZE bytes, unmounted and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (the tests run as root in CI)")
    base = Path(tempfile.mkdtemp(prefix="elemta-full-"))
    mount = base / "mnt"
    mount.mkdir()
    why = _run("mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs", str(mount))
    if why:
        image = base / "fs.img"
        with open(image, "wb") as f:
            f.truncate(2 * FS_SIZE)  # ext4 needs room for its journal
        loop = (_run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
                or _run("mount", "-o", "loop", str(image), str(mount)))
        if loop:
            shutil.rmtree(base)
            pytest.skip(f"cannot mount a small filesystem: tmpfs: {why}; loop ext4: {loop}")
    try:
        yield mount
    finally:
        if _run("umount", str(mount)):
            _run("umount", "-l", str(mount))
        shutil.rmtree(base, ignore_errors=True)


def message(msgid: str, n: int) -> bytes:
    """A message of 4 KiB to ~120 KiB (past the daemon's 64 KiB write batch for some)."""
    head = f"From: <s@client.test>\r\nSubject: full disk {msgid}\r\nMessage-ID: <{msgid}>\r\n\r\n"
    line = f"{msgid} {'x' * 60}\r\n".encode()
    return head.encode() + line * ((4 + (n * 29) % 116) * 1024 // len(line)) + b"END\r\n"


def send(port: int, batch: list[tuple[str, bytes, list[str]]]) -> dict[str, int]:
    """Send ``batch`` over one connection; the DATA reply code of each Message-ID."""
    codes: dict[str, int] = {}
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as client:
        for msgid, data, rcpts in batch:
            try:
                client.sendmail("s@client.test", rcpts, data)
                codes[msgid] = 250
            except smtplib.SMTPDataError as exc:
                codes[msgid] = exc.smtp_code
    return codes


def stored(root: Path, sub: str = "new") -> dict[tuple[str, str], list[bytes]]:
    """(Message-ID, user) -> the files with that Message-ID in that user's ``sub``/."""
    found: dict[tuple[str, str], list[bytes]] = {}
    for path in root.glob(f"example.com/*/{sub}/*"):
        data = path.read_bytes()
        match = MID.search(data)
        key = (match.group(1).decode() if match else f"partial:{path.name}", path.parent.parent.name)
        found.setdefault(key, []).append(data)
    return found


def check_stored(root: Path, sent: dict[str, tuple[bytes, list[str]]],
                 codes: dict[str, int]) -> None:
    """Each 250'd message byte-complete once per recipient in new/, nothing else there."""
    files = stored(root)
    expected = {(m, r.split("@")[0]) for m, code in codes.items() if code == 250 for r in sent[m][1]}
    assert set(files) == expected, (f"in new/ but not 250'd: {sorted(set(files) - expected)}; "
                                    f"250'd but missing: {sorted(expected - set(files))}")
    for (msgid, user), copies in files.items():
        assert len(copies) == 1, f"{msgid} is in {user}'s new/ {len(copies)} times"
        data, body = copies[0], sent[msgid][0]
        assert data.endswith(body), f"{msgid} in {user}'s new/ is not byte-complete"
        received = data[:-len(body)]
        assert received.startswith(b"Received: from client.test ")
        assert all(line[:1] in (b" ", b"\t") for line in received.split(b"\r\n")[1:-1])


def test_full_disk_every_message_is_250_and_stored_or_451_and_absent(
        small_fs: Path, tmp_path: Path) -> None:
    """Clients sending into a full Maildir filesystem get 250 (message complete in new/) or
    451 (message nowhere); tmp/ is left empty, the daemon keeps serving, and once space
    is back the messages told 451 are delivered when sent again."""
    setup = Setup(tmp_path)
    root = small_fs / "mail"
    setup.write({"delivery": {"maildir_root": str(root)}})
    batches = [[(f"c{c}.{n}@client.test", message(f"c{c}.{n}@client.test", c * PER_CLIENT + n),
                 [f"{u}@example.com" for u in USERS[:1 + (c + n) % 2]])
                for n in range(PER_CLIENT)] for c in range(CLIENTS)]
    sent = {msgid: (data, rcpts) for batch in batches for msgid, data, rcpts in batch}
    with running_daemon(setup) as daemon:
        port = setup.smtp_port
        prime = [("prime@client.test", message("prime@client.test", 0), [f"{u}@example.com" for u in USERS])]
        sent.update({m: (d, r) for m, d, r in prime})
        assert send(port, prime) == {"prime@client.test": 250}  # the mailbox folders exist now
        filler = small_fs / "filler"
        with open(filler, "wb") as f:
            while (free := _free(small_fs)) > LEFT_FREE:
                f.write(b"\0" * min(free - LEFT_FREE, 256 * 1024))
                f.flush()
                os.fsync(f.fileno())

        codes = {"prime@client.test": 250}
        with ThreadPoolExecutor(CLIENTS) as pool:
            for result in pool.map(send, [port] * CLIENTS, batches):
                codes.update(result)
        deferred = sorted(m for m, code in codes.items() if code == 451)
        accepted = [m for m, code in codes.items() if code == 250]
        assert set(codes.values()) <= {250, 451}, codes
        check_stored(root, sent, codes)
        assert deferred, f"the disk never filled ({_free(small_fs)} bytes free): test the test"
        assert len(accepted) > 1, "nothing was accepted before the disk filled"
        assert stored(root, "tmp") == {}, "a message told 451 left a file in tmp/"
        daemon.wait_for_log("No space left on device")
        assert "maildir delivery failed: cannot write" in daemon.log()
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
            assert client.ehlo()[0] == 250
            assert client.noop()[0] == 250

        filler.unlink()  # space is back: the senders' retries go through
        retry = [(m, sent[m][0], sent[m][1]) for m in deferred]
        assert send(port, retry) == {m: 250 for m in deferred}
        codes.update({m: 250 for m in deferred})
        check_stored(root, sent, codes)
        assert stored(root, "tmp") == {}
        assert daemon.process.poll() is None


def _free(path: Path) -> int:
    """Bytes free on the filesystem of ``path`` (for root: reserved blocks count)."""
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize
