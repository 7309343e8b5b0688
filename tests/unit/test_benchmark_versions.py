"""The benchmark compares two versions of elemta in one run (``--servers elemta,elemta@DIR``):
the other checkout is recognised, and it is a reference, never the peer to beat."""

from __future__ import annotations

from pathlib import Path

from benchmarks.servers import is_checkout_server
from benchmarks.stats import Measurement, check_targets

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_elemta_at_a_checkout_is_a_server(tmp_path: Path) -> None:
    """elemta@DIR names a server only when DIR holds an elemta_smtp package."""
    assert is_checkout_server(f"elemta@{REPO_ROOT}")
    assert not is_checkout_server(f"elemta@{tmp_path}")
    assert not is_checkout_server("elemta")
    assert not is_checkout_server(f"aiosmtpd@{REPO_ROOT}")


def m(server: str, rate: float, cpu: float) -> Measurement:
    return Measurement(round=1, server=server, mode="plain", accepted=int(rate), failed=0,
                       seconds=1.0, cpu_seconds=cpu * rate / 1000, p50_ms=1.0, p99_ms=2.0)


def test_another_elemta_is_not_the_best_peer() -> None:
    """A faster elemta@DIR does not fail the msgs/s target: only other servers are peers."""
    targets = check_targets([m("elemta", 900, 0.9), m("elemta@/old", 950, 0.9),
                             m("aiosmtpd", 500, 1.8), m("twisted", 800, 1.0)])
    rate = [t for t in targets if "msgs/s" in t.text]
    assert len(rate) == 1 and "elemta/twisted (best peer)" in rate[0].text and rate[0].met
