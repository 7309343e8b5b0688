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

from elemta_smtp.net.workers import WorkerThreads
from elemta_smtp.smtp.maildir_files import (
    Delivery,
    Filesystem,
    MaildirError,
    errno_text,
)
from elemta_smtp.smtp.sink import DeliveryFailed

log = Logger()
_T = TypeVar("_T")

FLUSH_BYTES = 64 * 1024
POOL_THREADS = 4
#: Recipient lists whose mailbox folders the sink remembers (the cache is emptied when full).
MAILBOX_CACHE = 1024


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

    def __init__(self, queue: _SerialQueue, delivery: Delivery) -> None:
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
        if isinstance(error, MaildirError):
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
        self._ready: set[str] = set()  # mailbox folders with tmp/, new/, cur/ (see Delivery)
        self._mailboxes: dict[tuple[str, ...], list[Path]] = {}  # recipients -> folders
        if threadpool is None:
            pool = WorkerThreads(POOL_THREADS, name="elemta-maildir")
            reactor.callWhenRunning(pool.start)
            reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
            threadpool = pool
        self._pool: WorkerPool = threadpool

    def begin(self, recipients: Sequence[str]) -> MaildirWriter:
        if not recipients:
            raise DeliveryFailed("a message needs at least one recipient", transient=False)
        key = tuple(recipients)
        mailboxes = self._mailboxes.get(key)
        if mailboxes is None:  # (checked and built once per recipient list, not per message)
            mailboxes = unique_mailboxes(self.root, recipients)
            if len(self._mailboxes) >= MAILBOX_CACHE:
                self._mailboxes.clear()
            self._mailboxes[key] = mailboxes
        name = unique_name(self._reactor.seconds(), os.getpid(), next(self._counter), self.hostname)
        delivery = Delivery(self._fs, mailboxes, name, self._ready)
        return MaildirWriter(_SerialQueue(self._reactor, self._pool), delivery)
