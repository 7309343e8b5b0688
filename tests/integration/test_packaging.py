"""packaging/: the systemd units pass `systemd-analyze verify`, and the example
elemta.toml is valid and shows every key of the schema."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomlkit

from elemta_smtp.cli import main
from elemta_smtp.config import load_config
from elemta_smtp.schema import SCHEMA

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = ("elemta.service", "elemta-certbot-renew.service", "elemta-certbot-renew.timer")
#: The binaries the units name, which need not exist on the test machine.
BINARIES = ("/usr/local/bin/elemta", "/usr/local/bin/certbot")

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def verify(tmp_path: Path, edit: tuple[str, str] | None = None) -> str:
    """Copy the units to tmp_path, point ExecStart/ExecStartPre at a binary that exists,
    run `systemd-analyze verify`, and return what it printed."""
    for name in UNITS:
        text = (PACKAGING / name).read_text()
        for binary in BINARIES:
            text = text.replace(binary, "/bin/true")
        if edit is not None:
            text = text.replace(*edit)
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             *(str(tmp_path / n) for n in UNITS)],
                            capture_output=True, text=True, timeout=60, check=False)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else
                                                      f"\n(exit {result.returncode})")


@needs_systemd
def test_units_verify_cleanly(tmp_path: Path) -> None:
    """systemd-analyze finds nothing wrong with the three units."""
    assert verify(tmp_path) == ""


@needs_systemd
def test_verify_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    """The check above is real: a misspelt key makes systemd-analyze complain."""
    output = verify(tmp_path, ("ProtectSystem=strict", "ProtectSystm=strict"))
    assert "Unknown key" in output and "ProtectSystm" in output


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    text = (PACKAGING / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if m := re.match(r"^([A-Za-z]+)=(.*)$", line):
            found.setdefault(m.group(1), []).append(m.group(2).strip())
    return found


def test_daemon_unit_hardening() -> None:
    """elemta.service reloads with SIGHUP, binds low ports without root, and is sandboxed."""
    d = _directives("elemta.service")
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["elemta"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert set(d["ReadWritePaths"][0].split()) == {"/var/lib/elemta", "/var/mail/elemta",
                                                    "/run/elemta"}
    assert d["RuntimeDirectory"] == ["elemta"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["LimitNOFILE"] == ["65536"]  # systemd's default soft limit (1024) < max_connections


def test_timer_runs_twice_a_day_at_random() -> None:
    """The renew timer fires twice a day with a randomized delay and catches up after downtime."""
    d = _directives("elemta-certbot-renew.timer")
    assert d["OnCalendar"] == ["*-*-* 00,12:00:00"]
    assert d["RandomizedDelaySec"] and d["Persistent"] == ["true"]
    service = _directives("elemta-certbot-renew.service")
    assert service["ExecStart"] == ["/usr/local/bin/elemta cert renew --if-due -c "
                                    "/etc/elemta/elemta.toml"]
    # root, so a lineage in /etc/letsencrypt can be renewed (certbot runs as the folders' owner)
    assert service["User"] == ["root"]
    assert set(service["ReadWritePaths"][0].split()) == {
        "/var/lib/elemta", "-/etc/letsencrypt", "-/var/lib/letsencrypt", "-/var/log/letsencrypt"}


def test_example_config_passes_config_check() -> None:
    """`elemta config check -c packaging/elemta.toml` exits 0."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["config", "check", "-c", str(PACKAGING / "elemta.toml")], out, err) == 0
    assert out.getvalue().strip().endswith(": OK") and err.getvalue() == ""


def test_example_config_shows_every_key_with_a_comment() -> None:
    """Every key of the schema is in the example, with a comment line right above it."""
    text = (PACKAGING / "elemta.toml").read_text()
    doc = tomlkit.parse(text)
    lines = text.splitlines()
    missing, uncommented = [], []
    for section, keys in SCHEMA.items():
        table: object = doc
        for part in section.split("."):
            table = table[part]  # type: ignore[index]
        for key in keys:
            if key not in table:  # type: ignore[operator]
                missing.append(f"{section}.{key}")
                continue
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
            # a key may share the comment of the key right above it (cert_file/key_file)
            above = lines[index - 1]
            if not (above.startswith("#") or re.match(r"^[a-z_]+ =", above)):
                uncommented.append(f"{section}.{key}")
    assert missing == [] and uncommented == []
    assert load_config(PACKAGING / "elemta.toml").tls.letsencrypt.enabled
