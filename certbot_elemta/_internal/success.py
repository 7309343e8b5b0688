"""The installer's last word: what elemta now serves, and where.

certbot ends ``certbot run`` with "Congratulations! You have successfully enabled
HTTPS on https://...", which is wrong for a mail server. When the elemta installer
handled the run, that line is replaced by the installer's own summary; any other
installer keeps certbot's text.
"""

from __future__ import annotations

from pathlib import Path

from certbot.display import ops as display_ops
from certbot.display import util as display_util

from elemta_smtp.cache import layout, live
from elemta_smtp.config import Config
from elemta_smtp.errors import InvalidCertificate

_original = display_ops.success_installation
_summary: list[str] = []  # set by the elemta installer's restart() in this process


def listeners(config: Config) -> str:
    """The TLS listeners a mail client reaches the certificate on, in words."""
    places = []
    if config.server.listen_addr is not None and config.tls.enable_starttls:
        places.append(f"SMTP {config.server.listen_addr} (STARTTLS)")
    if config.tls.listen_addr is not None:
        places.append(f"SMTPS {config.tls.listen_addr} (implicit TLS)")
    return " and ".join(places) or "no TLS listener ([tls] listen_addr and STARTTLS are off)"


def summary(config: Config, installed: Path | None, daemon_state: str) -> str:
    """One sentence: which certificate elemta serves from which file, on which listeners,
    and what the daemon did about it."""
    if installed is None:
        what = f"elemta serves the certificates in {layout.live_dir(config.tls.letsencrypt.cache_dir)}"
    else:
        try:
            facts = live.read_installed(installed)
            what = (f"elemta now serves the certificate for {', '.join(facts.names)} (serial "
                    f"{facts.serial}, valid until {facts.not_after:%Y-%m-%d %H:%M UTC}) from "
                    f"{installed}")
        except InvalidCertificate as exc:
            what = f"elemta could not read back {installed}: {exc.reason}"
    if not config.tls.enabled:
        return f"{what}, but [tls] enabled = false: TLS is off; {daemon_state}."
    return f"{what} on {listeners(config)}; {daemon_state}."


def remember(text: str) -> None:
    """Keep the summary for the end of ``certbot run``."""
    _summary[:] = [text]


def forget() -> None:
    """No elemta installation in this process (any more)."""
    _summary.clear()


def success_installation(domains: list[str]) -> None:
    """certbot's final message of ``run``: elemta's summary when elemta installed."""
    if _summary:
        display_util.notify(_summary[0])
    else:
        _original(domains)


display_ops.success_installation = success_installation
