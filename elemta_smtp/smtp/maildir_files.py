"""The blocking file work of one Maildir delivery: spool, fsync, link or copy,
rename into new/, fsync the folders. Runs only in pool threads (maildir.py hands
each message's steps to the pool one at a time); never on the reactor thread."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from elemta_smtp.errors import ElemtaError

_T = TypeVar("_T")

DIR_MODE = 0o700
FILE_MODE = 0o600
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


def errno_text(error: OSError) -> str:
    """``ENOSPC (No space left on device)`` for an OSError."""
    if error.errno is None:
        return str(error)
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{name} ({os.strerror(error.errno)})"


class MaildirError(ElemtaError):
    """A file operation failed while storing a message."""

    def __init__(self, operation: str, path: str, error: OSError) -> None:
        super().__init__(f"cannot {operation} {path}: {errno_text(error)}")
        self.operation = operation
        self.path = path
        self.error = error


class Delivery:
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
        self.error: MaildirError | None = None
        self.placed: list[str] = []  # every file this message created, for cleanup

    def _do(self, operation: str, path: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except OSError as e:
            raise MaildirError(operation, path, e) from e

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
            except MaildirError as e:
                if not trusted or not isinstance(e.error, FileNotFoundError):
                    raise
                self._make_folders(trust_ready=False)  # a folder was removed since: make it again
                self.fd = self._do("create", self.spool, lambda: self.fs.open(self.spool, flags, FILE_MODE))
            self.placed.append(self.spool)
        except MaildirError as e:
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
            raise MaildirError("create folder", str(path), e) from e
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
        except MaildirError as e:
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
        except MaildirError as e:
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
                raise MaildirError("link", target, e) from e
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

    def _fail(self, error: MaildirError) -> None:
        if self.error is None:
            self.error = error
        self.ready.difference_update(self.folders)  # check every folder again next time
        self.discard()
