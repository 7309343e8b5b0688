"""The daemon's pid file: which elemta is running, and recording our own pid."""

from __future__ import annotations

import os
from pathlib import Path

from elemta_smtp.errors import ElemtaError


class PidFileError(ElemtaError):
    """The pid file names another running daemon, or cannot be written."""


def is_elemta_cmdline(cmdline: bytes) -> bool:
    """Is this /proc/<pid>/cmdline an elemta daemon: ``.../elemta serve ...`` or
    ``python -m elemta_smtp ...``? A mere "elemta" in a path (``/opt/elemta/bin/python``
    running certbot) is not enough."""
    args = cmdline.split(b"\0")
    return b"elemta_smtp" in args or any(arg.rsplit(b"/", 1)[-1] == b"elemta" for arg in args)


def is_elemta(pid: int, proc: Path = Path("/proc")) -> bool:
    """Is ``pid`` alive and, where /proc shows it, an elemta process? A pid reused
    by another program after a crash must not look like a running daemon."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        return is_elemta_cmdline((proc / str(pid) / "cmdline").read_bytes())
    except FileNotFoundError:
        return not (proc / "self").exists()  # no /proc at all: trust the pid
    except OSError:
        return True


def live_pid(pid_file: Path) -> int | None:
    """The pid of the running elemta named in ``pid_file``, else None."""
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) <= 1:
        return None
    pid = int(text)
    return pid if is_elemta(pid) else None


#: How to get a pid file of one's own, for a daemon with a config file.
PID_FILE_ADVICE = "set a different [server] pid_file"
#: The same for ``elemta serve --dev``, whose pid file is ``<data dir>/elemta.pid``.
DEV_PID_FILE_ADVICE = "use another --data-dir"


def check_pid_file(pid_file: Path, pid: int, advice: str = PID_FILE_ADVICE) -> None:
    """Refuse to start when another running elemta owns ``pid_file``."""
    other = live_pid(pid_file)
    if other is not None and other != pid:
        raise PidFileError(f"{pid_file}: another elemta is running with pid {other}; "
                           f"stop it first, or {advice}")


def write_pid_file(pid_file: Path, pid: int, advice: str = PID_FILE_ADVICE) -> None:
    """Record ``pid`` atomically (temp file + rename), unless another daemon owns the file."""
    check_pid_file(pid_file, pid, advice)
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = pid_file.with_name(f".{pid_file.name}.{pid}")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, pid_file)
    except OSError as exc:
        raise PidFileError(f"cannot write pid file {pid_file}: {exc.strerror}; "
                           f"create its folder or {advice}") from None


def remove_pid_file(pid_file: Path, pid: int) -> None:
    """Remove ``pid_file`` if it still names ``pid``."""
    try:
        if pid_file.read_text().strip() == str(pid):
            pid_file.unlink()
    except OSError:
        pass
