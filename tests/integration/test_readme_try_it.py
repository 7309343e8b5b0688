"""The README's "try it from another terminal" command, run as written against
``elemta serve --dev``: it prints the server's reply and the message is stored."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_serve import DEV_PORTS, dev_daemon, port_taken

README = Path(__file__).resolve().parents[2] / "README.rst"


def try_it_command() -> str:
    """The ``python3 -c`` command of the README's opening, as a shell would get it."""
    text = README.read_text()
    match = re.search(r"^   (python3 -c '.*?')\n", text, re.M | re.S)
    assert match, "no python3 -c command in README.rst"
    return re.sub(r"\n   ", "\n", match.group(1))


def test_try_it_command_prints_the_reply_and_delivers(tmp_path: Path) -> None:
    """The python3 one-liner prints "(250, b'2.0.0 OK: queued as <id>')" and alice has it."""
    if any(port_taken(p) for p in DEV_PORTS):
        pytest.skip(f"another program uses one of the --dev ports {DEV_PORTS}")
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH")
    data = tmp_path / "data"
    with dev_daemon(data):
        result = subprocess.run(["sh", "-c", try_it_command()], capture_output=True, text=True,
                                timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"\(250, b'2\.0\.0 OK: queued as ([0-9A-F]+)'\)\n", result.stdout)
    assert match, f"printed {result.stdout!r}"
    [stored] = (data / "mail" / "example.com" / "alice" / "new").iterdir()
    assert f" id {match.group(1)}\r\n".encode() in stored.read_bytes()
    assert stored.read_bytes().endswith(b"\r\n\r\nhello\r\n")
