"""The plain values the SMTP session obeys (service.py takes them from elemta.toml once)."""

from __future__ import annotations

from dataclasses import dataclass

BARE_NEWLINE_MODES = ("normalize", "reject")


@dataclass(frozen=True)
class SessionSettings:
    """Limits and policy for every SMTP connection.

    ``local_domains`` and ``local_users`` are lower-case; an empty
    ``local_users`` accepts every local part of a local domain.
    """

    hostname: str
    max_message_size: int = 25_000_000
    max_recipients: int = 100
    max_errors: int = 20
    idle_timeout: float = 300.0
    local_domains: frozenset[str] = frozenset()
    local_users: frozenset[str] = frozenset()
    bare_newline: str = "normalize"
    starttls_available: bool = False
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if self.bare_newline not in BARE_NEWLINE_MODES:
            raise ValueError(f"bare_newline must be one of {BARE_NEWLINE_MODES}, got {self.bare_newline!r}")
        object.__setattr__(self, "local_domains", frozenset(d.lower() for d in self.local_domains))
        object.__setattr__(self, "local_users", frozenset(u.lower() for u in self.local_users))
