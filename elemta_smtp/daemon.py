"""The daemon handle, used by both halves: the pid file (which elemta is running, and
recording our own pid), the one rule for "is this pid an elemta daemon?", and telling
it to reload (SIGHUP). No certbot here: failures are ``ElemtaError``s carrying their
data, which the certbot plugin words as its own errors.

A daemon that is not running is not an error (it serves the cache when it starts); a
pid that belongs to another program is never signalled (SIGHUP would kill most programs).
When the daemon itself runs certbot it names its pid in ``DAEMON_PID_ENV``: the plugin's
reload then leaves that daemon alone, because it reloads by itself when certbot ends.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.errors import ElemtaError, WriteError

#: Set by the daemon in the environment of the certbot it runs: its own pid.
DAEMON_PID_ENV = "ELEMTA_DAEMON_PID"
PID_FILE_MODE = 0o644


class PidFileError(ElemtaError):
    """The pid file names another running daemon, or cannot be written."""


class PidFileUnreadable(PidFileError):
    """The pid file exists but cannot be read (``strerror`` says why)."""

    def __init__(self, pid_file: Path, strerror: str) -> None:
        self.pid_file = pid_file
        self.strerror = strerror
        super().__init__(f"cannot read elemta's pid file {pid_file}: {strerror}; run as root "
                         "or as the user elemta runs as")


class SignalRefused(ElemtaError):
    """The daemon ``pid`` (named in ``pid_file``) may not be signalled by this user."""

    def __init__(self, pid: int, pid_file: Path) -> None:
        self.pid = pid
        self.pid_file = pid_file
        super().__init__(f"cannot signal the elemta daemon (pid {pid} from {pid_file}): "
                         f"permission denied; run as root or as the user elemta runs as, or "
                         f"reload it with 'kill -HUP {pid}'")


# --- which process is elemta ------------------------------------------------------------

def is_elemta_cmdline(cmdline: bytes) -> bool:
    """Is this /proc/<pid>/cmdline an elemta daemon: ``.../elemta serve ...`` or
    ``python -m elemta_smtp ...``? A mere "elemta" in a path (``/opt/elemta/bin/python``
    running certbot) is not enough."""
    args = cmdline.split(b"\0")
    return b"elemta_smtp" in args or any(arg.rsplit(b"/", 1)[-1] == b"elemta" for arg in args)


def is_elemta(pid: int, proc: Path = Path("/proc")) -> bool:
    """Is ``pid`` alive and, where /proc shows it, an elemta process? A pid reused
    by another program after a crash must not look like a running daemon. Without /proc
    only the pid's existence is checked; a command line we may not read is trusted."""
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


def read_pid(pid_file: Path) -> int | None:
    """The pid written in ``pid_file``, or None when the file is missing or holds no pid
    (empty, not a number, init's). Raises ``PidFileUnreadable`` when it cannot be read."""
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileUnreadable(pid_file, exc.strerror or str(exc)) from None
    return int(text) if text.isdigit() and int(text) > 1 else None


def live_pid(pid_file: Path) -> int | None:
    """The pid of the running elemta named in ``pid_file``, else None."""
    try:
        pid = read_pid(pid_file)
    except PidFileUnreadable:
        return None
    return pid if pid is not None and is_elemta(pid) else None


# --- telling it to reload ---------------------------------------------------------------

class Reload(enum.Enum):
    """What ``reload_daemon`` did."""

    SIGNALLED = "signalled"
    NOT_RUNNING = "not running"      # no pid file
    STALE = "stale pid file"         # no such process, or not an elemta process
    RELOADS_ITSELF = "reloads itself"  # this runs as that daemon's certbot child


def reload_daemon(pid_file: Path, proc: Path = Path("/proc"),
                  env: Mapping[str, str] | None = None) -> tuple[Reload, int | None]:
    """Send SIGHUP to the elemta daemon named by ``pid_file``; say what happened. Not when
    ``env`` (this process's environment) says that daemon is the one running us: it
    reloads by itself when we end. Raises ``PidFileUnreadable`` or ``SignalRefused``."""
    pid = read_pid(pid_file)
    if pid is None:
        return (Reload.NOT_RUNNING if not pid_file.exists() else Reload.STALE), None
    if not is_elemta(pid, proc):
        return Reload.STALE, pid
    if (os.environ if env is None else env).get(DAEMON_PID_ENV) == str(pid):
        return Reload.RELOADS_ITSELF, pid
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return Reload.STALE, pid
    except PermissionError:
        raise SignalRefused(pid, pid_file) from None
    return Reload.SIGNALLED, pid


# --- our own pid file ---------------------------------------------------------------------

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
    """Record ``pid`` atomically (``cache.atomic``), unless another daemon owns the file."""
    check_pid_file(pid_file, pid, advice)
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(pid_file, f"{pid}\n".encode(), mode=PID_FILE_MODE)
    except OSError as exc:
        strerror = exc.strerror
    except WriteError as exc:
        strerror = exc.strerror
    else:
        return
    raise PidFileError(f"cannot write pid file {pid_file}: {strerror}; "
                       f"create its folder or {advice}")


def remove_pid_file(pid_file: Path, pid: int) -> None:
    """Remove ``pid_file`` if it still names ``pid``."""
    try:
        if pid_file.read_text().strip() == str(pid):
            pid_file.unlink()
    except OSError:
        pass
