"""Durable Maildir delivery (elemta_smtp.smtp.maildir) on real files in tmp_path.

The pool-side work runs inline (``InlinePool``), held back job by job
(``HeldPool``) or on a real ThreadPool whose results the test thread pumps
(``PumpedReactor``); disk errors come from a fault-injecting ``fs``."""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from elemta_smtp.smtp.maildir import (
    FLUSH_BYTES,
    MaildirSink,
    mailbox_dir,
    unique_mailboxes,
    unique_name,
)
from elemta_smtp.smtp.sink import DeliveryFailed, MessageSink

HOST = "mail.example.com"
NOW = 1_700_000_000.25


class InlineReactor:
    """callFromThread runs at once; records start/stop hooks."""

    def __init__(self) -> None:
        self.when_running: list[Callable[..., Any]] = []
        self.triggers: list[tuple[str, str, Callable[..., Any]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: object) -> None:
        f(*args)

    def seconds(self) -> float:
        return NOW

    def callWhenRunning(self, f: Callable[..., Any], *args: object) -> None:
        self.when_running.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[..., Any], *args: object) -> None:
        self.triggers.append((phase, event, f))


def _run(onResult: Callable[[bool, Any], object] | None, func: Callable[[], object]) -> None:
    try:
        result: object = func()
        ok = True
    except Exception:
        result, ok = Failure(), False  # type: ignore[no-untyped-call]
    if onResult is not None:
        onResult(ok, result)


class InlinePool:
    """A 'thread pool' that runs each job at once in the caller's thread."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[[], object]) -> None:
        _run(onResult, func)


class HeldPool:
    """A 'thread pool' that runs nothing until the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[bool, Any], object] | None, Callable[[], object]]] = []

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[[], object]) -> None:
        self.jobs.append((onResult, func))

    def run_one(self) -> None:
        onResult, func = self.jobs.pop(0)
        _run(onResult, func)


class FaultyFs:
    """The os functions, recording each call; ``fail(op, path)`` says which call raises ``err``."""

    def __init__(self, fail: Callable[[str, str], bool] = lambda op, path: False,
                 err: int = errno.ENOSPC) -> None:
        self.fail = fail
        self.err = err
        self.calls: list[tuple[str, str]] = []
        self.threads: set[int] = set()
        self._paths: dict[int, str] = {}

    def _call(self, op: str, path: str, fn: Callable[[], Any]) -> Any:
        self.calls.append((op, path))
        self.threads.add(threading.get_ident())
        if self.fail(op, path):
            raise OSError(self.err, os.strerror(self.err), path)
        return fn()

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self._call("mkdir", path, lambda: os.mkdir(path, mode))

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        fd: int = self._call("open", path, lambda: os.open(path, flags, mode))
        self._paths[fd] = path
        return fd

    def read(self, fd: int, length: int, /) -> bytes:
        data: bytes = self._call("read", self._paths[fd], lambda: os.read(fd, length))
        return data

    def write(self, fd: int, data: bytes, /) -> int:
        written: int = self._call("write", self._paths[fd], lambda: os.write(fd, data))
        return written

    def fsync(self, fd: int, /) -> None:
        self._call("fsync", self._paths[fd], lambda: os.fsync(fd))

    def close(self, fd: int, /) -> None:
        self._call("close", self._paths.pop(fd), lambda: os.close(fd))

    def link(self, src: str, dst: str) -> None:
        self._call("link", dst, lambda: os.link(src, dst))

    def rename(self, src: str, dst: str) -> None:
        self._call("rename", dst, lambda: os.rename(src, dst))

    def unlink(self, path: str) -> None:
        self._call("unlink", path, lambda: os.unlink(path))

    def ops(self, op: str) -> list[str]:
        return [path for o, path in self.calls if o == op]


def make_sink(root: Path, fs: FaultyFs | None = None, pool: Any = None) -> MaildirSink:
    return MaildirSink(root, HOST, InlineReactor(), pool or InlinePool(), fs=fs or FaultyFs())


def deliver(sink: MessageSink, recipients: list[str], *chunks: bytes) -> list[object]:
    """Write ``chunks``, commit, and return what the commit Deferred fired with."""
    writer = sink.begin(recipients)
    for chunk in chunks:
        writer.write(chunk)
    results: list[object] = []
    writer.commit().addBoth(results.append)
    return results


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def all_files(root: Path, sub: str) -> list[Path]:
    return sorted(root.glob(f"*/*/{sub}/*"))


MESSAGE = b"Received: from x\r\nSubject: hi\r\n\r\n\xe9t\xe9 8-bit\r\n.leading dot\r\n" + b"x" * 990 + b"\r\n"


def test_message_arrives_byte_exact_in_new(tmp_path: Path) -> None:
    """A committed message is in <root>/<domain>/<local>/new/ byte for byte, tmp/ is empty."""
    results = deliver(make_sink(tmp_path), ["alice@example.com"], MESSAGE[:7], MESSAGE[7:])
    assert results == [None]
    [path] = files(tmp_path / "example.com" / "alice" / "new")
    assert path.read_bytes() == MESSAGE
    assert files(tmp_path / "example.com" / "alice" / "tmp") == []
    assert (tmp_path / "example.com" / "alice" / "cur").is_dir()


def test_new_file_name_is_unique_maildir_name_with_size(tmp_path: Path) -> None:
    """The name in new/ is <sec>.M<usec>P<pid>Q<n>.<host>,S=<size>, distinct per message."""
    sink = make_sink(tmp_path)
    deliver(sink, ["alice@example.com"], b"one\r\n")
    deliver(sink, ["alice@example.com"], b"two!\r\n")
    names = sorted(p.name for p in files(tmp_path / "example.com" / "alice" / "new"))
    pid = os.getpid()
    assert names == [f"1700000000.M250000P{pid}Q1.{HOST},S=5", f"1700000000.M250000P{pid}Q2.{HOST},S=6"]


def test_folders_are_private(tmp_path: Path) -> None:
    """Maildir folders are created 0700 and message files 0600."""
    deliver(make_sink(tmp_path / "mail"), ["alice@example.com"], b"x\r\n")
    for folder in ("mail", "mail/example.com", "mail/example.com/alice", "mail/example.com/alice/new"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder
    [path] = files(tmp_path / "mail/example.com/alice/new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_large_message_streams_in_batches(tmp_path: Path) -> None:
    """Small writes are batched: a 1 MiB message in 1 KiB chunks takes ~16 disk writes, not 1024."""
    fs = FaultyFs()
    chunks = [bytes([i % 251]) * 1024 for i in range(1024)]
    assert deliver(make_sink(tmp_path, fs), ["alice@example.com"], *chunks) == [None]
    [path] = files(tmp_path / "example.com" / "alice" / "new")
    assert path.read_bytes() == b"".join(chunks)
    assert len(fs.ops("write")) <= (1024 * 1024) // FLUSH_BYTES + 1


def test_recipients_share_one_spool_by_hard_links(tmp_path: Path) -> None:
    """Several recipients get hard links to one file (one inode), across domains."""
    rcpts = ["alice@example.com", "bob@example.com", "carol@example.org"]
    assert deliver(make_sink(tmp_path), rcpts, MESSAGE) == [None]
    paths = all_files(tmp_path, "new")
    assert len(paths) == 3
    assert {p.read_bytes() for p in paths} == {MESSAGE}
    assert len({p.stat().st_ino for p in paths}) == 1
    assert paths[0].stat().st_nlink == 3
    assert all_files(tmp_path, "tmp") == []


def test_duplicate_recipients_get_one_copy(tmp_path: Path) -> None:
    """The same mailbox named twice (any case) receives the message once."""
    rcpts = ["alice@example.com", "Alice@Example.COM", "alice@example.com"]
    assert deliver(make_sink(tmp_path), rcpts, MESSAGE) == [None]
    assert len(all_files(tmp_path, "new")) == 1


def test_link_refused_falls_back_to_copy(tmp_path: Path) -> None:
    """When link() fails with EXDEV the other recipient gets an fsync'd copy."""
    fs = FaultyFs(fail=lambda op, path: op == "link", err=errno.EXDEV)
    assert deliver(make_sink(tmp_path, fs), ["alice@example.com", "bob@example.com"], MESSAGE) == [None]
    paths = all_files(tmp_path, "new")
    assert [p.read_bytes() for p in paths] == [MESSAGE, MESSAGE]
    assert paths[0].stat().st_ino != paths[1].stat().st_ino
    assert any("bob/tmp/" in p for p in fs.ops("fsync"))


def test_nothing_in_new_until_durable(tmp_path: Path) -> None:
    """new/ stays empty through every write job, and the file is fsync'd before the rename into new/
    and new/ is fsync'd before the Deferred fires."""
    pool = HeldPool()
    fs = FaultyFs()
    writer = make_sink(tmp_path, fs, pool).begin(["alice@example.com", "bob@example.com"])
    for _ in range(5):
        writer.write(b"y" * FLUSH_BYTES)
    results: list[object] = []
    writer.commit().addBoth(results.append)
    new = [tmp_path / "example.com" / u / "new" for u in ("alice", "bob")]
    jobs = 0
    while not results:
        assert all(files(n) == [] for n in new), f"new/ not empty after {jobs} jobs"
        pool.run_one()
        jobs += 1
    assert results == [None]
    assert jobs == 6  # five 64 KiB writes, commit
    [spool] = [p for p in fs.ops("open") if "/alice/tmp/" in p]
    spool_fsync = fs.calls.index(("fsync", spool))
    first_rename = next(i for i, (op, _) in enumerate(fs.calls) if op == "rename")
    new_fsyncs = [i for i, (op, p) in enumerate(fs.calls) if op == "fsync" and p.endswith("/new")]
    assert spool_fsync < first_rename < min(new_fsyncs)
    assert len(new_fsyncs) == 2
    assert [len(n.read_bytes()) for d in new for n in files(d)] == [5 * FLUSH_BYTES] * 2


def _is(op: str, where: str) -> Callable[[str, str], bool]:
    return lambda o, path: o == op and where in path


FAULTS = [
    pytest.param(_is("mkdir", "bob"), errno.EACCES, id="mkdir-second-mailbox-EACCES"),
    pytest.param(_is("open", "alice/tmp/"), errno.EROFS, id="create-spool-EROFS"),
    pytest.param(_is("write", "alice/tmp/"), errno.ENOSPC, id="write-ENOSPC"),
    pytest.param(_is("fsync", "alice/tmp/"), errno.EIO, id="fsync-spool-EIO"),
    pytest.param(_is("link", "bob/tmp/"), errno.ENOSPC, id="link-second-ENOSPC"),
    pytest.param(_is("rename", "bob/new/"), errno.EIO, id="rename-second-EIO"),
    pytest.param(_is("fsync", "bob/new"), errno.EIO, id="fsync-second-new-dir-EIO"),
]


@pytest.mark.parametrize(("fail", "err"), FAULTS)
def test_disk_error_is_transient_and_leaves_new_empty(tmp_path: Path, fail: Callable[[str, str], bool],
                                                      err: int) -> None:
    """Any OSError fails the commit with a transient DeliveryFailed (451) and leaves no file in
    any recipient's new/ (nor tmp/), so the client's retry makes no duplicate."""
    fs = FaultyFs(fail=fail, err=err)
    with capturedLogs() as events:
        results = deliver(make_sink(tmp_path, fs), ["alice@example.com", "bob@example.com"],
                          b"z" * (FLUSH_BYTES + 10), MESSAGE)
    [result] = results
    assert isinstance(result, Failure)
    assert isinstance(result.value, DeliveryFailed)
    assert result.value.transient
    assert errno.errorcode[err] in result.value.reason
    assert all_files(tmp_path, "new") == []
    assert all_files(tmp_path, "tmp") == []
    lines = [formatEvent(e) for e in events if "delivery failed" in formatEvent(e)]
    assert len(lines) == 1
    assert str(tmp_path) in lines[0]
    assert f"{errno.errorcode[err]} ({os.strerror(err)})" in lines[0]


def test_abort_removes_the_spool_file(tmp_path: Path) -> None:
    """abort() unlinks what was written to tmp/ and nothing reaches new/."""
    writer = make_sink(tmp_path).begin(["alice@example.com", "bob@example.com"])
    writer.write(b"a" * (FLUSH_BYTES + 1))
    assert len(all_files(tmp_path, "tmp")) == 1
    writer.abort()
    assert all_files(tmp_path, "tmp") == []
    assert all_files(tmp_path, "new") == []


def test_abort_never_raises(tmp_path: Path) -> None:
    """abort() after a disk error, twice, or after commit does not raise."""
    fs = FaultyFs(fail=_is("write", "tmp"), err=errno.EIO)
    writer = make_sink(tmp_path, fs).begin(["alice@example.com"])
    writer.write(b"a" * FLUSH_BYTES)
    writer.abort()
    writer.abort()
    assert all_files(tmp_path, "tmp") == []
    committed = make_sink(tmp_path).begin(["bob@example.com"])
    committed.commit()
    committed.abort()
    assert len(all_files(tmp_path, "new")) == 1


def test_writer_does_no_file_work_in_the_calling_thread(tmp_path: Path) -> None:
    """begin/write/commit only queue work: with the pool held, no file call has happened."""
    pool = HeldPool()
    fs = FaultyFs()
    writer = make_sink(tmp_path, fs, pool).begin(["alice@example.com"])
    writer.write(b"q" * (3 * FLUSH_BYTES))
    writer.commit()
    assert fs.calls == []
    assert len(pool.jobs) == 1  # one message's jobs run one at a time


class PumpedReactor(InlineReactor):
    """callFromThread queues; the test thread plays the reactor by pumping the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[object, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: object) -> None:
        self.calls.put((f, args))

    def run_until(self, deferreds: list[Deferred[None]]) -> list[object]:
        results: list[object] = []
        for d in deferreds:
            d.addBoth(results.append)
        while len(results) < len(deferreds):
            f, args = self.calls.get(timeout=30)
            f(*args)
        return results


@pytest.fixture
def thread_pool() -> Iterator[ThreadPool]:
    pool = ThreadPool(minthreads=0, maxthreads=4, name="test-maildir")
    pool.start()
    yield pool
    pool.stop()


def test_real_thread_pool_keeps_each_message_in_order(tmp_path: Path, thread_pool: ThreadPool) -> None:
    """With four worker threads and eight concurrent messages, each file is byte-exact
    (chunks in order) and no file call ran on the reactor thread."""
    reactor = PumpedReactor()
    fs = FaultyFs()
    sink = MaildirSink(tmp_path, HOST, reactor, thread_pool, fs=fs)
    expected: dict[str, bytes] = {}
    commits = []
    writers = [(f"user{i}@example.com", sink.begin([f"user{i}@example.com"])) for i in range(8)]
    for n in range(40):
        for rcpt, writer in writers:
            chunk = f"{rcpt} chunk {n:04d} ".encode() * 700
            expected[rcpt] = expected.get(rcpt, b"") + chunk
            writer.write(chunk)
    commits = [writer.commit() for _, writer in writers]
    assert reactor.run_until(commits) == [None] * 8
    for rcpt, body in expected.items():
        [path] = files(tmp_path / "example.com" / rcpt.split("@")[0] / "new")
        assert path.read_bytes() == body
    assert threading.get_ident() not in fs.threads


def test_own_pool_follows_the_reactor(tmp_path: Path) -> None:
    """Without a thread pool the sink starts its own when the reactor runs and stops it at shutdown."""
    reactor = InlineReactor()
    MaildirSink(tmp_path, HOST, reactor)
    assert len(reactor.when_running) == 1
    assert [(phase, event) for phase, event, _ in reactor.triggers] == [("during", "shutdown")]
    reactor.when_running[0]()
    reactor.triggers[0][2]()


UNSAFE = [
    pytest.param("../etc@example.com", id="dot-dot-slash"),
    pytest.param("..@example.com", id="dot-dot"),
    pytest.param(".hidden@example.com", id="leading-dot"),
    pytest.param("a/b@example.com", id="slash"),
    pytest.param("a\x00b@example.com", id="nul"),
    pytest.param("a\nb@example.com", id="newline"),
    pytest.param("@example.com", id="empty-local"),
    pytest.param("alice@../x", id="domain-dot-dot"),
    pytest.param("alice@a/b", id="domain-slash"),
    pytest.param("alice@", id="empty-domain"),
    pytest.param("alice", id="no-at"),
    pytest.param("x" * 256 + "@example.com", id="too-long"),
    pytest.param("\udcff@example.com", id="not-utf8"),
]


@pytest.mark.parametrize("recipient", UNSAFE)
def test_unsafe_address_is_refused_permanently(tmp_path: Path, recipient: str) -> None:
    """An address that would escape or hide its Maildir is refused with a permanent error,
    before any file is touched."""
    fs = FaultyFs()
    with pytest.raises(DeliveryFailed) as info:
        make_sink(tmp_path, fs).begin(["ok@example.com", recipient])
    assert not info.value.transient
    assert fs.calls == []


def test_remembered_recipients_still_deliver_and_unsafe_ones_are_still_refused(tmp_path: Path) -> None:
    """Folders remembered for a recipient list serve later messages; a list with an unsafe
    address is refused every time (refusals are not remembered)."""
    sink = make_sink(tmp_path)
    for text in (b"one\r\n", b"two\r\n"):
        assert deliver(sink, ["Alice@example.com"], text) == [None]
    assert len(files(tmp_path / "example.com" / "alice" / "new")) == 2
    for _ in range(2):
        with pytest.raises(DeliveryFailed):
            sink.begin(["alice@example.com", "../x@example.com"])


@pytest.mark.parametrize(("recipient", "folder"), [
    pytest.param("alice@example.com", "example.com/alice", id="plain"),
    pytest.param("Alice.Smith@Example.COM", "example.com/alice.smith", id="lower-cased"),
    pytest.param('"a@b"@example.com', 'example.com/"a@b"', id="quoted-at"),
    pytest.param("jos\u00e9@example.com", "example.com/jos\u00e9", id="utf8"),
])
def test_mailbox_dir(recipient: str, folder: str) -> None:
    """Addresses map to <root>/<domain>/<local-part>, lower-cased."""
    assert mailbox_dir(Path("/m"), recipient) == Path("/m") / folder


def test_unique_mailboxes_keeps_order() -> None:
    """Duplicates collapse to the first occurrence, order kept."""
    got = unique_mailboxes(Path("/m"), ["b@x.org", "a@x.org", "B@x.org"])
    assert got == [Path("/m/x.org/b"), Path("/m/x.org/a")]


def test_unique_name_escapes_host() -> None:
    """'/' and ':' in the host name are escaped so the name stays one Maildir-safe component."""
    assert unique_name(12.000042, 7, 3, "a/b:c") == "12.M000042P7Q3.a\\057b\\072c"


def test_empty_recipient_list_is_refused(tmp_path: Path) -> None:
    """begin([]) is a permanent error, not a file with no mailbox."""
    with pytest.raises(DeliveryFailed):
        make_sink(tmp_path).begin([])


def test_abort_before_any_flush_touches_no_file(tmp_path: Path) -> None:
    """A message dropped while still in the write buffer never creates a file nor queues work."""
    pool = HeldPool()
    fs = FaultyFs()
    writer = make_sink(tmp_path, fs, pool).begin(["alice@example.com"])
    writer.write(b"small")
    writer.abort()
    assert pool.jobs == []
    assert fs.calls == []


class RacingFs(FaultyFs):
    """Another message creates ``contested`` just before this one retries its mkdir."""

    def __init__(self, contested: str) -> None:
        super().__init__()
        self.contested = contested
        self.seen = 0

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        if path.endswith(self.contested):
            self.seen += 1
            if self.seen == 2:
                os.mkdir(path, mode)
        super().mkdir(path, mode)


def test_concurrent_creation_of_a_new_mailbox_is_fine(tmp_path: Path) -> None:
    """If another message creates the same new Maildir folder at the same moment, delivery succeeds."""
    fs = RacingFs("/example.com/alice")
    assert deliver(make_sink(tmp_path / "mail", fs), ["alice@example.com"], MESSAGE) == [None]
    assert fs.seen == 2
    [path] = files(tmp_path / "mail" / "example.com" / "alice" / "new")
    assert path.read_bytes() == MESSAGE
