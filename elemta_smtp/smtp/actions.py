"""What the sans-IO session asks its adapter to do. Plain values, no I/O.

They are never changed once made, but not declared frozen: a frozen dataclass costs
about 100 ns more to build, and the session builds several per message (a reply per
command).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(slots=True)
class Reply:
    """Write these bytes (one or more complete reply lines) to the client."""

    data: bytes


@dataclass(slots=True)
class StartTLS:
    """Start the TLS handshake now (the 220 reply before it is already written)."""


@dataclass(slots=True)
class Close:
    """Close the connection once the replies before it are written."""


@dataclass(slots=True)
class Abort:
    """Drop the connection now, without a word (nothing more could reach the client)."""


@dataclass(slots=True)
class PauseReading:
    """Stop reading from the client: the input held while a message is stored is over the limit."""


@dataclass(slots=True)
class ResumeReading:
    """Read from the client again (after a ``PauseReading``)."""


@dataclass(slots=True)
class BeginMessage:
    """Open a message for ``recipients``; the Received header is its first chunk."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    received_header: bytes


@dataclass(slots=True)
class MessageData:
    """Append message text (already dot-unstuffed, CRLF line ends)."""

    data: bytes


@dataclass(slots=True)
class EndMessage:
    """The message is complete: make it durable, then call ``Session.delivery_done``."""

    size: int


@dataclass(slots=True)
class AbortMessage:
    """Drop the message being received (its log line is a ``Log`` of its own)."""

    reason: str


@dataclass(slots=True)
class Log:
    """Log one line: ``text`` is a format string over ``fields`` (twisted.logger's,
    PEP 3101), and the fields are kept as the event's named fields. The wording is
    in loglines.py."""

    level: Literal["info", "warn", "error"]
    text: str
    fields: Mapping[str, object]


Action = (Reply | StartTLS | Close | Abort | PauseReading | ResumeReading | BeginMessage
          | MessageData | EndMessage | AbortMessage | Log)
