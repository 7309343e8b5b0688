"""The peers' durable Maildir writer: the same guarantee elemta gives before it
answers 250 (file written and fsync'd in tmp/, renamed into new/, new/ fsync'd)."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path


class DurableMaildir:
    """One Maildir (tmp/, new/, cur/) that ``deliver`` writes to durably.

    ``deliver`` blocks on fsync: the peers call it from a thread pool, never
    from their event loop. It is safe to call from several threads at once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._tmp = str(root / "tmp")
        self._new = str(root / "new")
        self._new_fd = os.open(self._new, os.O_RDONLY | os.O_DIRECTORY)
        self._counter = itertools.count()
        self._unique = f"{os.getpid()}.{socket.gethostname().replace('/', '_')}"

    def deliver(self, data: bytes) -> str:
        """Store one message; returns its file name once it is on disk."""
        name = f"{time.time_ns()}.M{next(self._counter)}P{self._unique}"
        tmp_path = os.path.join(self._tmp, name)
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, os.path.join(self._new, name))
        os.fsync(self._new_fd)
        return name

    def close(self) -> None:
        os.close(self._new_fd)
