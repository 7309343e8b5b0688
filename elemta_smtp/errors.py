"""The one error hierarchy of elemta_smtp: every error a user can see derives from
``ElemtaError`` and says what is wrong and what to do. The certificate and cache errors
live here because both halves (daemon and plugin) and several packages raise them;
package-specific ones (``ConfigError``, ``MaildirError``,
``TransitionError`` ...) derive from ``ElemtaError`` in their own modules."""

from __future__ import annotations

from pathlib import Path


class ElemtaError(Exception):
    """Base of every error elemta_smtp raises on purpose."""


class CacheError(ElemtaError):
    """The certificate cache cannot be read or written as asked."""


class WriteError(CacheError):
    """A file could not be written (atomically). ``path`` names it; ``strerror`` is the
    system's reason ("Permission denied", "No space left on device")."""

    def __init__(self, path: Path, strerror: str, message: str) -> None:
        self.path = path
        self.strerror = strerror
        super().__init__(message)


class ChallengeError(CacheError):
    """A challenge answer cannot be written as asked (a token that is not one, a folder
    that cannot be made); the message says what to do, ``strerror`` the system's reason
    when there is one."""

    def __init__(self, message: str, strerror: str = "") -> None:
        self.strerror = strerror
        super().__init__(message)


class InvalidName(CacheError):
    """A certificate name is not a DNS name, so it cannot name a file in live/."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"{name!r} is not a DNS name such as \"mail.example.com\": certificates in the "
            "cache are named after their domain (letters, digits, '-' and '.', no '*' or '/')"
        )


class InvalidCertificate(CacheError):
    """A certificate file (or the PEM about to be written to it) is unusable.

    ``path`` names the file; ``reason`` is one sentence saying what is wrong and what to do.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DeliveryFailed(ElemtaError):
    """A message could not be stored. ``transient`` errors are answered 451
    (the client retries later); the message is never half-stored in new/."""

    def __init__(self, reason: str, transient: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
