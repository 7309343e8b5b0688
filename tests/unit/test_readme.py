"""README.rst commands a newcomer copies: checked against what they must do."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.rst"


def section(title: str) -> str:
    """The text of the top-level README section ``title`` (up to the next one)."""
    text = README.read_text()
    match = re.search(rf"^{re.escape(title)}\n=+\n(.*?)(?=^\S[^\n]*\n=+\n)", text, re.M | re.S)
    assert match, f"no section {title!r} in README.rst"
    return match.group(1)


def test_install_keeps_the_config_file_private() -> None:
    """The Install section installs elemta.toml (which may hold relay_password) readable by
    root and the group elemta only (0640 root:elemta, as the systemd section does) or 0600."""
    [line] = [line for line in section("Install").splitlines()
              if line.strip().startswith("install ") and "elemta.toml" in line]
    args = shlex.split(line.split("#", 1)[0])
    mode = args[args.index("-m") + 1]
    assert mode in ("0640", "0600"), f"elemta.toml installed with mode {mode}: {line.strip()}"
    if mode == "0640":
        assert args[args.index("-g") + 1] == "elemta", line.strip()
    assert "-o" not in args or args[args.index("-o") + 1] == "root", line.strip()
