"""``elemta config check``: the file loaded (cli.py reported its problems); print notes on
the effect of settings, warnings about what the configuration will not be able to do,
and a summary."""

from __future__ import annotations

from typing import TextIO

from elemta_smtp.acme.renewal import config_warnings
from elemta_smtp.cache.lineages import renewal_warnings
from elemta_smtp.config import Config

EXIT_OK = 0


def config_check(config: Config, out: TextIO) -> int:
    """``elemta config check``: the config loaded; print notes on its effects, warnings
    about what it will not be able to do, and a summary."""
    for note in config_warnings(config):
        print(f"note: {note}", file=out)
    for warning in renewal_warnings(config):
        print(f"warning: {warning}", file=out)
    print(f"{config.path}: OK", file=out)
    return EXIT_OK
