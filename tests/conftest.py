"""Shared to every test: garbage is collected after each test module, so an unclosed
socket or file (a ResourceWarning, an error under this suite's warning filter) fails in
the module that leaked it instead of in whichever later test the collector ran."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_the_module() -> Iterator[None]:
    yield
    gc.collect()
