"""What the sans-IO session asks its adapter to do. Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """Write these bytes (one or more complete reply lines) to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Start the TLS handshake now (the 220 reply before it is already written)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection once the replies before it are written."""


@dataclass(frozen=True, slots=True)
class BeginMessage:
    """Open a message for ``recipients``; the Received header is its first chunk."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    received_header: bytes


@dataclass(frozen=True, slots=True)
class MessageData:
    """Append message text (already dot-unstuffed, CRLF line ends)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndMessage:
    """The message is complete: make it durable, then call ``Session.delivery_done``."""

    size: int


@dataclass(frozen=True, slots=True)
class AbortMessage:
    """Drop the message being received; ``reason`` is for the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class RefusedAtMail:
    """A message was refused before DATA (MAIL declared a SIZE= over the limit): log it."""

    sender: str
    size: int
    reason: str


Action = (Reply | StartTLS | Close | BeginMessage | MessageData | EndMessage | AbortMessage
          | RefusedAtMail)
