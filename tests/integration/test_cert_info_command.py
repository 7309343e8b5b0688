"""`elemta cert info`, the real command in a child process, on real certificate files."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from elemta_smtp.tls import store
from tests.certs import CA, make_ca, make_leaf
from tests.support import Setup, elemta_command

DOMAIN = "mail.example.com"


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca("R11", parent=make_ca("ISRG Root X1"), organization="Let's Encrypt")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.write()
    return s


def cert_info(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(elemta_command("cert", "info", "-c", str(setup.config_path), *args),
                          capture_output=True, text=True, timeout=60, check=False)


def test_expired_certificate_reads_expired_days_ago(setup: Setup, ca: CA) -> None:
    """A live file that expired a day and a half ago reads "expired 1 day ago" (not "-2 days
    left"), is not served, and the command exits 1."""
    now = datetime.now(timezone.utc)
    leaf = make_leaf(ca, [DOMAIN], not_before=now - timedelta(days=90),
                     not_after=now - timedelta(days=1, hours=12))
    store.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)
    result = cert_info(setup)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(expired 1 day ago)" in result.stdout
    assert "days left" not in result.stdout
    assert "NOT SERVED" in result.stdout
