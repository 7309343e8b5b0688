"""The alert rules in packaging/prometheus are valid Prometheus rules and pass their unit
tests (promtool, from Debian's prometheus package, which ./dev test installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "packaging" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is missing: install Debian's prometheus package (./dev test does)")
    return subprocess.run([tool, *args], cwd=FOLDER, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_rules_file_is_valid() -> None:
    """`promtool check rules` accepts elemta.rules.yml and finds every alert."""
    result = promtool("check", "rules", "elemta.rules.yml")
    assert result.returncode == 0, f"elemta.rules.yml is broken:\n{result.stdout}{result.stderr}"
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: each alert fires when it should and not before or otherwise."""
    result = promtool("test", "rules", "elemta.rules.test.yml")
    assert result.returncode == 0, (f"an alert rule does not behave as its test says:\n"
                                    f"{result.stdout}{result.stderr}")
