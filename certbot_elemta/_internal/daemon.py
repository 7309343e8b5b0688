"""Telling a running elemta daemon to reload: SIGHUP to the pid in
``[server] pid_file``. A daemon that is not running is not an error (the new
certificate is used when it starts); a pid that belongs to another program is
never signalled (SIGHUP would kill most programs)."""

from __future__ import annotations

import enum
import os
import signal
from pathlib import Path

from certbot import errors

from elemta_smtp.daemon import is_elemta_cmdline


class Reload(enum.Enum):
    """What ``reload_daemon`` did."""

    SIGNALLED = "signalled"
    NOT_RUNNING = "not running"  # no pid file
    STALE = "stale pid file"     # no such process, or not an elemta process


def read_pid(pid_file: Path) -> int | None:
    """The pid written in ``pid_file``, or None when the file is missing or holds no pid."""
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.PluginError(f"Could not read elemta's pid file {pid_file}: {exc.strerror}. "
                                 "Run certbot as root or as the user elemta runs as.") from exc
    return int(text) if text.isdigit() and int(text) > 1 else None


def process_cmdline(pid: int, proc: Path = Path("/proc")) -> bytes | None:
    """The command line of ``pid``; None if it does not exist; ``b"elemta"`` where
    /proc is not available (then only the pid's existence is checked)."""
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return b"elemta"
    try:
        return (proc / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        return b"elemta"


def reload_daemon(pid_file: Path, proc: Path = Path("/proc")) -> tuple[Reload, int | None]:
    """Send SIGHUP to the elemta daemon named by ``pid_file``; say what happened."""
    pid = read_pid(pid_file)
    if pid is None:
        return (Reload.NOT_RUNNING if not pid_file.exists() else Reload.STALE), None
    cmdline = process_cmdline(pid, proc)
    if cmdline is None or not is_elemta_cmdline(cmdline):
        return Reload.STALE, pid
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return Reload.STALE, pid
    except PermissionError as exc:
        raise errors.PluginError(
            f"Could not signal the elemta daemon (pid {pid} from {pid_file}): permission denied. "
            "Run certbot as root or as the user elemta runs as, or reload it yourself with "
            f"'kill -HUP {pid}'.") from exc
    return Reload.SIGNALLED, pid
