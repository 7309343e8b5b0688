"""What the sans-IO session asks its adapter to do. Plain values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


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
class Abort:
    """Drop the connection now, without a word (nothing more could reach the client)."""


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading from the client: the input held while a message is stored is over the limit."""


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """Read from the client again (after a ``PauseReading``)."""


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
    """Drop the message being received (its log line is a ``Log`` of its own)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """Log one line: ``text`` is a format string over ``fields`` (twisted.logger's,
    PEP 3101), and the fields are kept as the event's named fields. The wording is
    in loglines.py."""

    level: Literal["info", "warn", "error"]
    text: str
    fields: Mapping[str, object]


Action = (Reply | StartTLS | Close | Abort | PauseReading | ResumeReading | BeginMessage
          | MessageData | EndMessage | AbortMessage | Log)
