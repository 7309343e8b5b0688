"""The cert info benchmark still runs end to end: one round, no timed assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_certinfo_benchmark_prints_both_figures() -> None:
    """One round of `python -m benchmarks.certinfo` runs both real commands on the same
    certificate and prints a row for each, the floor and the ratio."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.certinfo", "--runs", "1", "--warmup", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines[1:4]] == [
        "elemta cert info", "certbot certificates", "python + cryptography (floor)"]
    assert "x as fast as certbot certificates (medians; target: 3x)" in lines[4]
