"""The one atomic writer of elemta: the cache's files, the pid file, state.json and the
certbot plugin's edits of elemta.toml all go through ``atomic_write``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from elemta_smtp.cache.layout import FILE_MODE, adopt
from elemta_smtp.errors import WriteError


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE,
                 owner: tuple[int, int] | None = None) -> None:
    """Write a temp file next to ``path`` with ``mode``, fsync, rename over, fsync the folder.

    Readers see the old file or the new one, never a mix. Made as root, the file takes
    ``owner`` (uid, gid) when given (an edited file keeps its owner), else the owner of its
    folder. On any failure the temp file is removed and ``WriteError`` (a ``CacheError``)
    says what to do; the previous file is unchanged.
    """
    import secrets  # noqa: PLC0415  (writers only: `elemta cert info` starts faster without it)

    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc),
                         f"cannot create a file in {folder}: {exc.strerror}; run as the user "
                         "that owns it (the one running elemta)") from None
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            elif owner is None:
                adopt(tmp, folder)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(path, exc.strerror or str(exc),
                         f"cannot write {path}: {exc.strerror}; the previous file (if any) is "
                         "unchanged — free disk space or fix permissions and try again") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
