"""HTTP-01 answers on disk: ``<cache_dir>/webroot/.well-known/acme-challenge/<token>``.

Files are world-readable (0644, directories 0755) under an explicit umask, so
the daemon can read them whichever user it runs as; token names are checked
against the base64url alphabet before they become file names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from certbot import errors
from certbot.compat import filesystem

from certbot_elemta._internal import constants


def is_token(token: str) -> bool:
    """True for a base64url token (1..256 of ``[A-Za-z0-9_-]``): the only names we write or serve."""
    return constants.TOKEN.match(token) is not None


def answer_path(challenge_dir: Path, token: str) -> Path:
    """Where the answer for ``token`` lives; a token that is not base64url is refused."""
    if not is_token(token):
        raise errors.PluginError(
            f"The CA sent the HTTP-01 token {token!r}, which is not base64url "
            "(letters, digits, '-' and '_'): refusing to use it as a file name. "
            "Check that --server points at a real ACME CA.")
    return challenge_dir / token


def make_dirs(challenge_dir: Path) -> None:
    """Create ``challenge_dir`` and its missing parents with mode 0755."""
    missing = [p for p in (challenge_dir, *challenge_dir.parents) if not p.is_dir()]
    with filesystem.temp_umask(constants.CHALLENGE_UMASK):
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=constants.CHALLENGE_DIR_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise errors.PluginError(
                    f"Could not create {directory} for the HTTP-01 answers: {exc.strerror}. "
                    "Run certbot as the user that owns elemta's cache_dir (or root).") from exc
            os.chmod(directory, constants.CHALLENGE_DIR_MODE)


def write_answer(challenge_dir: Path, token: str, validation: str) -> Path:
    """Write one key authorization (0644) and return its path."""
    path = answer_path(challenge_dir, token)
    make_dirs(challenge_dir)
    try:
        with filesystem.temp_umask(constants.CHALLENGE_UMASK):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                         constants.CHALLENGE_FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(validation.encode("ascii"))
            os.chmod(path, constants.CHALLENGE_FILE_MODE)
    except OSError as exc:
        raise errors.PluginError(
            f"Could not write the HTTP-01 answer {path}: {exc.strerror}. Run certbot as the "
            "user that owns elemta's cache_dir (or root).") from exc
    return path


def remove_answer(path: Path) -> None:
    """Remove an answer; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_answer(challenge_dir: Path, token: str) -> bytes | None:
    """The stored answer for a valid ``token``, or None (missing, not a regular
    file, a symlink, or too large to be a key authorization)."""
    if not is_token(token):
        return None
    try:
        fd = os.open(challenge_dir / token, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > constants.MAX_ANSWER:
            return None
        return f.read(constants.MAX_ANSWER)
