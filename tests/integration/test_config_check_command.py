"""`elemta config check -c FILE`, the real command in a child process: every problem of a
file in one run, in the admin's words."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import elemta_command

BAD = """\
[server]
hostname = "mail.example.com"
max_connections = "1000"
hostname = "mx.example.com"
hostnme = "mail.example.com"

[tls]
enabled = "true"
"""


def test_repeated_key_misspelled_key_and_wrong_types_in_one_run(tmp_path: Path) -> None:
    """A key written twice no longer hides the rest: the repetition, the misspelled key and
    both wrong types are printed in one run, each with its line and what to write instead,
    and the command exits 78 (EX_CONFIG)."""
    path = tmp_path / "elemta.toml"
    path.write_text(BAD)
    result = subprocess.run(elemta_command("config", "check", "-c", str(path)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f'error: {path}:3: [server.max_connections] expected a whole number from 1 to 1000000, '
        'got the string "1000": write 1000 without quotes',
        f'error: {path}:4: [server.hostname] "hostname" is written twice in [server] (first on '
        'line 2): delete one; this one was not checked',
        f'error: {path}:5: [server.hostnme] unknown key "hostnme"; did you mean "hostname"?',
        f'error: {path}:8: [tls.enabled] expected true or false, got the string "true": write '
        "true without quotes",
        f"4 problem(s) in {path}.",
    ]


def test_shipped_example_checks_without_notes() -> None:
    """The unedited packaging/elemta.toml (Let's Encrypt, renewal_days = 30 on 90-day
    certificates) checks OK with no renewal-cap note: the cap changes nothing there."""
    example = Path(__file__).parents[2] / "packaging" / "elemta.toml"
    result = subprocess.run(elemta_command("config", "check", "-c", str(example)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"{example}: OK\n"
