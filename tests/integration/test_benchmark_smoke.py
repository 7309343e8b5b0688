"""The benchmark still runs end to end: a tiny bounded run per server, no timed assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, servers: str, modes: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--rounds", "1", "--messages", "10",
         "--clients", "2", "--warmup", "1", "--per-connection", "5", "--time-limit", "30",
         "--modes", modes, "--servers", servers, "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_elemta_and_a_peer_both_get_figures(tmp_path: Path) -> None:
    """A plain-mode run against elemta and aiosmtpd reports rate, CPU and latency for each."""
    report = run_benchmark(tmp_path, "elemta,aiosmtpd", "plain")
    rows = {(r["server"], r["mode"]): r for r in report["summary"]}
    assert set(rows) == {("elemta", "plain"), ("aiosmtpd", "plain")}
    for row in rows.values():
        assert row["failed"] == 0
        assert row["msgs_per_s"] > 0
        assert row["cpu_ms_per_msg"] is not None and row["cpu_ms_per_msg"] >= 0
        assert row["p99_ms"] >= row["p50_ms"] > 0
    assert [t["mode"] for t in report["targets"]] == ["plain", "plain"]


@pytest.mark.slow
def test_twisted_peer_speaks_every_mode(tmp_path: Path) -> None:
    """The Twisted peer accepts mail over plain, STARTTLS, implicit TLS and persistent TLS."""
    report = run_benchmark(tmp_path, "twisted", "starttls,implicit,persistent,plain")
    assert [r["mode"] for r in report["summary"]] == ["starttls", "implicit", "persistent", "plain"]
    for row in report["summary"]:
        assert row["failed"] == 0
        assert row["msgs_per_s"] > 0
    assert sum(m["accepted"] for m in report["measurements"]) == 4 * 2 * 10


@pytest.mark.slow
def test_elemta_with_metrics_is_a_reference_measured_with_real_scrapes(tmp_path: Path) -> None:
    """elemta-metrics runs beside elemta (its ratio is metrics on / off), its /metrics count
    matches the clients' (the run fails otherwise), and it is not a peer in the targets."""
    report = run_benchmark(tmp_path, "elemta,elemta-metrics,aiosmtpd", "plain")
    rows = {r["server"]: r for r in report["summary"]}
    assert rows["elemta-metrics"]["failed"] == 0
    assert rows["elemta-metrics"]["cpu_vs_elemta"]["median"] > 0
    assert all("elemta-metrics" not in t["text"] for t in report["targets"])
