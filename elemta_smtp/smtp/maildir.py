"""Durable Maildir delivery: the ``MessageSink`` that stores accepted mail.

Each message is streamed into one spool file in the first recipient's ``tmp/``
while DATA arrives. On commit, in a thread pool and never on the reactor thread:

1. the spool file is written out and fsync'd;
2. it is hard-linked (or, where linking fails with EXDEV and friends, copied and
   fsync'd) into every other recipient's ``tmp/``;
3. every ``tmp/`` entry is renamed into ``new/`` and each ``new/`` folder is fsync'd;
4. only then does the ``Deferred`` fire, and the protocol answers 250.

Every step that can fail for want of space or permission (2) happens before the
first file shows up in any ``new/``. If a rename or a folder fsync fails anyway
(3, rare), the copies already renamed are unlinked again and the client is told
451: it retries the whole message, so no recipient gets it twice -- unless a
mail reader moved its copy out of ``new/`` in those microseconds, in which case
that one recipient may see a duplicate. A crash between steps leaves at most
leftovers in ``tmp/`` (which Maildir readers clean up), never a partial file in
``new/``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.smtp.sink import DeliveryFailed
from elemta_smtp.smtp.workers import WorkerThreads

log = Logger()
_T = TypeVar("_T")

FLUSH_BYTES = 64 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
POOL_THREADS = 4
_COPY_CHUNK = 1024 * 1024
# link() errors after which a copy is worth trying: other filesystem, too many
# links, or a filesystem without hard links.
_LINK_FALLBACK = {errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP}


class Filesystem(Protocol):
    """The few blocking calls delivery makes; the ``os`` module is one. Tests pass
    an object that fails on purpose to simulate a full or broken disk."""

    def mkdir(self, path: str, mode: int = ...) -> None: ...
    def open(self, path: str, flags: int, mode: int = ...) -> int: ...
    def read(self, fd: int, length: int, /) -> bytes: ...
    def write(self, fd: int, data: bytes, /) -> int: ...
    def fsync(self, fd: int, /) -> None: ...
    def close(self, fd: int, /) -> None: ...
    def link(self, src: str, dst: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def unlink(self, path: str) -> None: ...


class WorkerPool(Protocol):
    """What delivery needs of a ``twisted.python.threadpool.ThreadPool``."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[[], object]) -> None: ...


class MaildirReactor(Protocol):
    """The reactor interfaces delivery uses (IReactorFromThreads, IReactorTime, IReactorCore)."""

    def callFromThread(self, f: Callable[..., Any], /, *args: object) -> None: ...
    def seconds(self) -> float: ...
    def callWhenRunning(self, f: Callable[..., Any], /, *args: object) -> object: ...
    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[..., Any], /,
                              *args: object) -> object: ...


# --- pure decisions ---------------------------------------------------------


def _unsafe_reason(part: str) -> str | None:
    """Why ``part`` cannot be a folder name, or None if it can."""
    if not part:
        return "is empty"
    if part.startswith("."):
        return "starts with a dot"
    if "/" in part:
        return "contains a slash"
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        return "contains a control character"
    try:
        encoded = part.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > 255:
        return "is longer than 255 bytes"
    return None


def mailbox_dir(root: Path, recipient: str) -> Path:
    """``<root>/<domain>/<local-part>`` for ``local@domain``, both lower-cased (as
    ``local_users`` are). Raises a permanent ``DeliveryFailed`` for an address whose
    parts are not safe as folder names (slash, leading dot, NUL, control characters)."""
    local, at, domain = recipient.rpartition("@")
    if not at:
        raise DeliveryFailed(f"cannot deliver to {recipient!r}: not an address of the form local@domain",
                             transient=False)
    for what, part in (("local part", local), ("domain", domain)):
        why = _unsafe_reason(part)
        if why:
            raise DeliveryFailed(f"cannot deliver to {recipient!r}: the {what} {part!r} {why}, "
                                 "so it cannot name a mailbox folder", transient=False)
    return root / domain.lower() / local.lower()


def unique_mailboxes(root: Path, recipients: Sequence[str]) -> list[Path]:
    """The mailbox folders for ``recipients`` in order, each once."""
    folders = [mailbox_dir(root, r) for r in recipients]
    return list(dict.fromkeys(folders))


def unique_name(now: float, pid: int, counter: int, hostname: str) -> str:
    """A Maildir file name, ``<sec>.M<usec>P<pid>Q<n>.<host>``; "/" and ":" in the
    host name are escaped as the Maildir convention says."""
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{seconds}.M{micros:06d}P{pid}Q{counter}.{host}"


def errno_text(error: OSError) -> str:
    """``ENOSPC (No space left on device)`` for an OSError."""
    if error.errno is None:
        return str(error)
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{name} ({os.strerror(error.errno)})"


# --- blocking part: runs only in pool threads, one job at a time per message ---


class StoreError(Exception):
    """A file operation failed while storing a message."""

    def __init__(self, operation: str, path: str, error: OSError) -> None:
        super().__init__(f"cannot {operation} {path}: {errno_text(error)}")
        self.operation = operation
        self.path = path
        self.error = error


class _Delivery:
    """The files of one message. Every method is blocking and is called in a pool
    thread, never two at once; the first failure is kept and the rest are skipped.

    ``ready`` is the sink's set of mailbox folders known to have tmp/, new/ and cur/:
    their mkdir calls are skipped. A folder leaves it on any failure, and a spool
    file that cannot be created for want of a folder makes the folders again."""

    def __init__(self, fs: Filesystem, mailboxes: list[Path], name: str,
                 ready: set[str] | None = None) -> None:
        self.fs = fs
        self.mailboxes = mailboxes
        self.folders = [str(m) for m in mailboxes]
        self.ready: set[str] = set() if ready is None else ready
        self.name = name
        self.spool = os.path.join(self.folders[0], "tmp", name)
        self.fd: int | None = None
        self.opened = False
        self.size = 0
        self.error: StoreError | None = None
        self.placed: list[str] = []  # every file this message created, for cleanup

    def _do(self, operation: str, path: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except OSError as e:
            raise StoreError(operation, path, e) from e

    def open(self) -> None:
        """Make every recipient's Maildir and create the spool file (once, by the first job)."""
        if self.opened:
            return
        self.opened = True
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            trusted = self._make_folders(trust_ready=True)
            try:
                self.fd = self._do("create", self.spool, lambda: self.fs.open(self.spool, flags, FILE_MODE))
            except StoreError as e:
                if not trusted or not isinstance(e.error, FileNotFoundError):
                    raise
                self._make_folders(trust_ready=False)  # a folder was removed since: make it again
                self.fd = self._do("create", self.spool, lambda: self.fs.open(self.spool, flags, FILE_MODE))
            self.placed.append(self.spool)
        except StoreError as e:
            self._fail(e)

    def _make_folders(self, trust_ready: bool) -> bool:
        """tmp/, new/ and cur/ in every mailbox; returns whether any was skipped as ready."""
        skipped = False
        for mailbox, folder in zip(self.mailboxes, self.folders, strict=True):
            if trust_ready and folder in self.ready:
                skipped = True
                continue
            for sub in ("tmp", "new", "cur"):
                self._ensure_dir(mailbox / sub)
            self.ready.add(folder)
        return skipped

    def _ensure_dir(self, path: Path) -> None:
        """mkdir 0700 (with missing parents); fsync the parent of each new folder.
        Another message may create the same folder at the same time: that is fine."""
        try:
            try:
                self.fs.mkdir(str(path), DIR_MODE)
            except FileNotFoundError:
                if path.parent == path:
                    raise
                self._ensure_dir(path.parent)
                self.fs.mkdir(str(path), DIR_MODE)
        except FileExistsError:
            return
        except OSError as e:
            raise StoreError("create folder", str(path), e) from e
        self._fsync_dir(str(path.parent))

    def _fsync_dir(self, where: str) -> None:
        fd = self._do("open folder", where, lambda: self.fs.open(where, os.O_RDONLY | os.O_DIRECTORY))
        try:
            self._do("fsync folder", where, lambda: self.fs.fsync(fd))
        finally:
            self._close_quietly(fd)

    def write(self, data: bytes) -> None:
        self.open()
        if self.error is not None or self.fd is None or not data:
            return
        try:
            self._write_all(self.fd, data, self.spool)
            self.size += len(data)
        except StoreError as e:
            self._fail(e)

    def _write_all(self, fd: int, data: bytes, path: str) -> None:
        while data:
            written = self._do("write", path, functools.partial(self.fs.write, fd, data))
            data = data[written:]

    def finish(self, data: bytes) -> str:
        """Write the rest, make the message durable in every new/; returns the name in new/."""
        self.write(data)
        if self.error is not None:
            raise self.error
        fd = self.fd
        assert fd is not None
        try:
            self._do("fsync", self.spool, lambda: self.fs.fsync(fd))
            self.fd = None
            self._do("close", self.spool, lambda: self.fs.close(fd))
            in_tmp = [self.spool]
            for folder in self.folders[1:]:
                target = os.path.join(folder, "tmp", self.name)
                self._link_or_copy(target)
                self.placed.append(target)
                in_tmp.append(target)
            final = f"{self.name},S={self.size}"
            for folder, source in zip(self.folders, in_tmp, strict=True):
                target = os.path.join(folder, "new", final)
                self._do("rename into", target, functools.partial(self.fs.rename, source, target))
                self.placed.remove(source)
                self.placed.append(target)
            for folder in self.folders:
                self._fsync_dir(os.path.join(folder, "new"))
        except StoreError as e:
            self._fail(e)
            raise
        self.placed.clear()
        return final

    def _link_or_copy(self, target: str) -> None:
        try:
            self.fs.link(self.spool, target)
            return
        except OSError as e:
            if e.errno not in _LINK_FALLBACK:
                raise StoreError("link", target, e) from e
        source = self._do("open", self.spool, lambda: self.fs.open(self.spool, os.O_RDONLY))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            fd = self._do("create", target, lambda: self.fs.open(target, flags, FILE_MODE))
            self.placed.append(target)
            try:
                while chunk := self._do("read", self.spool, lambda: self.fs.read(source, _COPY_CHUNK)):
                    self._write_all(fd, chunk, target)
                self._do("fsync", target, lambda: self.fs.fsync(fd))
            finally:
                self._close_quietly(fd)
            self.placed.remove(target)
        finally:
            self._close_quietly(source)

    def discard(self) -> None:
        """Close and unlink whatever this message created. Never raises."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self._close_quietly(fd)
        for path in self.placed:
            with contextlib.suppress(OSError):
                self.fs.unlink(path)
        self.placed.clear()

    def _close_quietly(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self.fs.close(fd)

    def _fail(self, error: StoreError) -> None:
        if self.error is None:
            self.error = error
        self.ready.difference_update(self.folders)  # check every folder again next time
        self.discard()


# --- reactor side -----------------------------------------------------------


class _SerialQueue:
    """Runs jobs in the pool one after another; results arrive on the reactor thread."""

    def __init__(self, reactor: MaildirReactor, pool: WorkerPool) -> None:
        self._reactor = reactor
        self._pool = pool
        self._pending: deque[tuple[Callable[[], object], Deferred[Any]]] = deque()
        self._busy = False

    def submit(self, job: Callable[[], _T]) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self._pending.append((job, d))
        self._next()
        return d

    def _next(self) -> None:
        if self._busy or not self._pending:
            return
        self._busy = True
        job, d = self._pending.popleft()

        def on_result(success: bool, result: object) -> None:  # in the pool thread
            self._reactor.callFromThread(self._done, d, success, result)

        self._pool.callInThreadWithCallback(on_result, job)

    def _done(self, d: Deferred[Any], success: bool, result: object) -> None:
        self._busy = False
        self._next()
        if success:
            d.callback(result)
        else:
            d.errback(cast(Failure, result))


class MaildirWriter:
    """One message on its way into Maildirs (a ``MessageWriter``). Small writes are
    buffered and handed to the pool in ``FLUSH_BYTES`` batches, in order."""

    def __init__(self, queue: _SerialQueue, delivery: _Delivery) -> None:
        self._queue = queue
        self._delivery = delivery
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._state = "open"  # -> "committing" | "aborted"
        self._flushed = False

    def write(self, data: bytes) -> None:
        if self._state != "open":
            raise RuntimeError(f"write() after the message was {self._state}")
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= FLUSH_BYTES:
            self._flushed = True
            job = functools.partial(self._delivery.write, self._take())
            self._queue.submit(job).addErrback(self._unexpected)

    def _take(self) -> bytes:
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    def commit(self) -> Deferred[None]:
        if self._state != "open":
            raise RuntimeError(f"commit() after the message was {self._state}")
        self._state = "committing"
        rest = self._take()
        d = self._queue.submit(lambda: self._delivery.finish(rest))
        return d.addCallbacks(self._delivered, self._failed)

    def _delivered(self, name: str) -> None:
        """Stored: the protocol logs the message line (one per message, not two)."""

    def _failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, StoreError):
            log.error("maildir delivery failed: cannot {operation} {path}: {errno_text}; "
                      "the client was told to retry (451); check free space and permissions",
                      operation=error.operation, path=error.path, errno_text=errno_text(error.error))
            reason = f"mailbox storage failed ({errno_text(error.error)})"
        else:
            log.failure("maildir delivery failed unexpectedly", failure)
            self._queue.submit(self._delivery.discard)
            reason = "mailbox storage failed (internal error)"
        raise DeliveryFailed(reason, transient=True)

    def abort(self) -> None:
        try:
            if self._state != "open":
                return
            self._state = "aborted"
            self._buffer.clear()
            if self._flushed:  # else no file was ever asked for
                self._queue.submit(self._delivery.discard).addErrback(self._unexpected)
        except Exception:
            log.failure("could not abort a message")

    def _unexpected(self, failure: Failure) -> None:
        log.failure("maildir job failed unexpectedly", failure)


class MaildirSink:
    """Delivers to ``<root>/<domain>/<local-part>/{tmp,new,cur}`` (a ``MessageSink``).

    Blocking file work runs in ``threadpool``; without one, the sink makes its own
    pool of ``POOL_THREADS`` threads, started and stopped with ``reactor``. ``fs`` is
    the seam for fault injection in tests (default: the ``os`` module)."""

    def __init__(self, root: Path, hostname: str, reactor: MaildirReactor,
                 threadpool: WorkerPool | None = None, fs: Filesystem = os) -> None:
        self.root = Path(root)
        self.hostname = hostname
        self._reactor = reactor
        self._fs = fs
        self._counter = itertools.count(1)
        self._ready: set[str] = set()  # mailbox folders with tmp/, new/, cur/ (see _Delivery)
        if threadpool is None:
            pool = WorkerThreads(POOL_THREADS, name="elemta-maildir")
            reactor.callWhenRunning(pool.start)
            reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
            threadpool = pool
        self._pool: WorkerPool = threadpool

    def begin(self, recipients: Sequence[str]) -> MaildirWriter:
        if not recipients:
            raise DeliveryFailed("a message needs at least one recipient", transient=False)
        mailboxes = unique_mailboxes(self.root, recipients)
        name = unique_name(self._reactor.seconds(), os.getpid(), next(self._counter), self.hostname)
        delivery = _Delivery(self._fs, mailboxes, name, self._ready)
        return MaildirWriter(_SerialQueue(self._reactor, self._pool), delivery)
