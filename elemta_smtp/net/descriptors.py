"""File descriptors: the daemon's open-files limit and the share the HTTP-01 listener
may use, so that HTTP clients can never make SMTP fail with ``EMFILE``.

Every open connection holds one descriptor. At start the soft ``RLIMIT_NOFILE`` is
raised to the hard one (systemd's default soft limit, 1024, is below the default
``max_connections`` alone). SMTP keeps a reserve: ``max_connections`` plus
``OTHER_DESCRIPTORS`` for everything else the daemon opens while running. The
HTTP-01 listener gets what is left of the limit after the descriptors open at
start and that reserve, and never more than its own cap.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

#: Descriptors the daemon may open while running besides one per SMTP connection and the
#: ones open at start: four Maildir threads with a message file and a folder each, certbot's
#: pipes, the notice mailer's connection, certificate files read on reload, a margin.
OTHER_DESCRIPTORS = 64
#: Where the kernel caps any process's limit (``fs.nr_open``); used when the hard limit is
#: "unlimited", which ``setrlimit`` refuses for the soft limit.
NR_OPEN = Path("/proc/sys/fs/nr_open")
FD_DIR = Path("/proc/self/fd")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one; returns (before, after). A limit
    that cannot be raised stays as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(NR_OPEN.read_text().strip())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


def open_files_limit() -> int:
    """The soft open-files limit now."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def open_descriptors(fd_dir: Path = FD_DIR) -> int:
    """How many descriptors this process has open (0 where /proc is missing). Costs a
    directory listing: called once at start, not per connection."""
    try:
        return max(0, len(os.listdir(fd_dir)) - 1)  # the listing's own descriptor
    except OSError:
        return 0


def smtp_reserve(max_connections: int) -> int:
    """Descriptors kept for SMTP and the daemon's own work, never given to HTTP."""
    return max_connections + OTHER_DESCRIPTORS


def http_connection_cap(limit: int, open_at_start: int, max_connections: int,
                        http_cap: int) -> int:
    """How many HTTP connections may be open at once: what the limit leaves after the
    descriptors open at start and SMTP's reserve, at most ``http_cap``, never below 0."""
    return max(0, min(http_cap, limit - open_at_start - smtp_reserve(max_connections)))


def needed_limit(open_at_start: int, max_connections: int, http_cap: int) -> int:
    """The open-files limit at which SMTP's reserve and the full HTTP cap both fit."""
    return open_at_start + smtp_reserve(max_connections) + http_cap
