"""What the SMTP protocol hands accepted mail to: the contract between the
protocol (smtp/session.py, smtp/protocol.py) and delivery (smtp/maildir.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred

from elemta_smtp.errors import DeliveryFailed

__all__ = ["DeliveryFailed", "MessageSink", "MessageWriter"]


class MessageWriter(Protocol):
    """One message being received. ``write`` is called with body chunks in order
    (the first chunk is the Received header); then exactly one of ``commit`` or
    ``abort``."""

    def write(self, data: bytes) -> None:
        """Append bytes. Must not block on fsync. A disk error may be raised here
        as ``DeliveryFailed`` or kept and reported by ``commit``."""

    def commit(self) -> Deferred[None]:
        """Make the message durable in every recipient's new/. Fires with None once
        it is on disk (fsync'd file and directories); errbacks with ``DeliveryFailed``."""

    def abort(self) -> None:
        """Drop the message: remove whatever was written to tmp/. Never raises."""


class MessageSink(Protocol):
    """Where accepted mail goes."""

    def begin(self, recipients: Sequence[str]) -> MessageWriter:
        """Start a message for these recipients (``local@domain``, domain lower-case,
        already accepted by the recipient policy). May raise ``DeliveryFailed``."""
