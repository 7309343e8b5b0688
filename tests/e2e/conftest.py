"""Fixtures for end-to-end tests against a real Pebble ACME server.

``start_pebble(http_port=..., validity_seconds=...)`` starts one (stopped after
the test); ``pebble`` is the common case: Pebble validating HTTP-01 on the
port of ``elemta_setup``'s HTTP-01 listener. Tests skip, saying why, only when
the Pebble binaries are not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.pebble import Pebble, missing_binaries, running_pebble
from tests.support import Setup

StartPebble = Callable[..., Pebble]


@pytest.fixture
def start_pebble(tmp_path: Path) -> Iterator[StartPebble]:
    """Start Pebbles for this test: ``start_pebble(http_port=N, validity_seconds=None,
    tls_port=None)``."""
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        count = 0

        def start(http_port: int, validity_seconds: int | None = None,
                  tls_port: int | None = None) -> Pebble:
            nonlocal count
            count += 1
            return stack.enter_context(running_pebble(
                tmp_path / f"pebble-{count}", http_port=http_port, validity_seconds=validity_seconds,
                tls_port=tls_port))

        yield start


@pytest.fixture
def elemta_setup(tmp_path: Path) -> Setup:
    """An elemta.toml on free 127.0.0.1 ports for mail.example.com (not yet written)."""
    return Setup(tmp_path / "elemta")


@pytest.fixture
def pebble(start_pebble: StartPebble, elemta_setup: Setup) -> Pebble:
    """Pebble validating HTTP-01 against the daemon's HTTP-01 listener."""
    return start_pebble(http_port=elemta_setup.http_port)
