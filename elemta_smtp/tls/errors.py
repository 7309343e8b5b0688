"""Errors of the certificate cache and its validation."""

from __future__ import annotations

from pathlib import Path

from elemta_smtp.errors import ElemtaError


class StoreError(ElemtaError):
    """The certificate cache cannot be read or written as asked."""


class InvalidName(StoreError):
    """A certificate name is not a DNS name, so it cannot name a file in live/."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"{name!r} is not a DNS name such as \"mail.example.com\": certificates in the "
            "cache are named after their domain (letters, digits, '-' and '.', no '*' or '/')"
        )


class InvalidCertificate(StoreError):
    """A certificate file (or the PEM about to be written to it) is unusable.

    ``path`` names the file; ``reason`` is one sentence saying what is wrong and what to do.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
