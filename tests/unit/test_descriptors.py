"""How many HTTP-01 connections the open-files limit allows once SMTP's reserve is kept
(elemta_smtp/descriptors.py): plain arithmetic, and counting this process's descriptors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elemta_smtp.net.descriptors import (
    OTHER_DESCRIPTORS,
    http_connection_cap,
    needed_limit,
    open_descriptors,
    smtp_reserve,
)


def test_smtp_reserve_is_max_connections_plus_the_daemons_own() -> None:
    """SMTP keeps one descriptor per allowed connection plus OTHER_DESCRIPTORS."""
    assert smtp_reserve(1000) == 1000 + OTHER_DESCRIPTORS


@pytest.mark.parametrize(("limit", "open_at_start", "max_connections", "expected"), [
    pytest.param(1 << 20, 12, 1000, 64, id="plenty: the listener's own cap"),
    pytest.param(12 + 20 + OTHER_DESCRIPTORS + 30, 12, 20, 30, id="squeezed"),
    pytest.param(12 + 20 + OTHER_DESCRIPTORS, 12, 20, 0, id="nothing left"),
    pytest.param(1024, 12, 1000, 0, id="soft 1024 with the default max_connections"),
])
def test_http_gets_only_what_smtp_leaves(limit: int, open_at_start: int, max_connections: int,
                                         expected: int) -> None:
    """HTTP connections <= limit - open at start - SMTP's reserve, at most the cap, never < 0."""
    assert http_connection_cap(limit, open_at_start, max_connections, 64) == expected


def test_needed_limit_fits_everything() -> None:
    """At the limit needed_limit() names, the HTTP listener gets its whole cap."""
    limit = needed_limit(12, 1000, 64)
    assert http_connection_cap(limit, 12, 1000, 64) == 64
    assert http_connection_cap(limit - 1, 12, 1000, 64) == 63


def test_open_descriptors_counts_this_process(tmp_path: Path) -> None:
    """The count follows descriptors opened and closed (and is 0 without /proc)."""
    before = open_descriptors()
    fds = [os.open(tmp_path, os.O_RDONLY) for _ in range(3)]
    try:
        assert open_descriptors() == before + 3
    finally:
        for fd in fds:
            os.close(fd)
    assert open_descriptors() == before
    assert open_descriptors(tmp_path / "no-proc") == 0
