"""DATA framing: message text after 354, up to the one true end, CRLF.CRLF.

Works on whole buffers with ``bytes.find``/``count``/``replace`` (no per-byte
Python loop). Only ``<CRLF>.<CRLF>`` ends a message: ``\\n.\\n``, ``\\r.\\r``,
``\\r\\n.\\n`` and friends are message text, never end-of-data (the SMTP
smuggling class of bugs). Text handed out is dot-unstuffed and has CRLF line
ends; a lone CR or LF is turned into CRLF ("normalize") or refuses the message
("reject"). NUL bytes, lines over 998 characters and messages over the size
limit refuse it too. Once a message is refused nothing more is handed out, but
input is still read, and discarded, up to CRLF.CRLF, so the client stays in
step and its next command is read as a command.
"""

from __future__ import annotations

import re

from elemta_smtp.smtp import replies

END_OF_DATA = b"\r\n.\r\n"
MAX_LINE = 998  # characters, CRLF excluded (RFC 5322 2.1.1)
_LINE_END = re.compile(rb"\r\n|\r|\n")


class DataFramer:
    """Frames one message. ``feed`` returns the text to store and, once the end
    is seen, the bytes after it; ``error`` is the reply refusing the message."""

    __slots__ = ("_max_size", "_pending", "_reject_bare", "error", "reason", "size")

    def __init__(self, max_size: int, reject_bare_newline: bool) -> None:
        self._max_size = max_size
        self._reject_bare = reject_bare_newline
        # Bytes not yet handed out. While the message is good it always starts
        # right after a CRLF (at first the CRLF that ended the DATA command), so
        # a "." at the start of a line is always preceded by CRLF in the buffer.
        self._pending = b"\r\n"
        self.size = 0
        self.error: bytes | None = None
        self.reason = ""

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Take the next bytes: ``(text to store, None)`` while the message goes on,
        ``(text to store, bytes after CRLF.CRLF)`` when it ended."""
        buf = self._pending + data
        end = buf.find(END_OF_DATA)
        if self.error is not None:
            if end < 0:
                self._pending = buf[-4:]  # CRLF.CRLF may straddle the next chunk
                return b"", None
            self._pending = b""
            return b"", buf[end + 5:]
        if end >= 0:
            self._pending = b""
            return self._text(buf[:end + 2]), buf[end + 5:]
        cut = buf.rfind(b"\r\n")
        self._pending = buf[cut:]
        text = self._text(buf[:cut + 2]) if cut else b""
        if self._good() and len(self._pending) > MAX_LINE + 3:
            self._refuse(replies.DATA_LINE_TOO_LONG, "line too long")
        if not self._good():
            self._pending = self._pending[-4:]
        return text, None

    def _good(self) -> bool:
        return self.error is None

    def _refuse(self, reply: bytes, reason: str) -> None:
        self.error = reply
        self.reason = reason

    def _text(self, lines: bytes) -> bytes:
        """Check and convert complete lines; ``lines`` starts with the CRLF before them."""
        self.size += len(lines) - 2
        if self.size > self._max_size:
            self._refuse(replies.SIZE_EXCEEDED, "message too big")
            return b""
        if b"\x00" in lines:
            self._refuse(replies.DATA_NUL, "NUL byte in message")
            return b""
        text = lines.replace(b"\r\n.", b"\r\n")
        crlf = lines.count(b"\r\n")
        if lines.count(b"\r") != crlf or lines.count(b"\n") != crlf:
            if self._reject_bare:
                self._refuse(replies.DATA_BARE_NEWLINE, "bare LF or CR in message")
                return b""
            text = _LINE_END.sub(b"\r\n", text)
        if len(text) > MAX_LINE + 4 and max(map(len, text.split(b"\r\n"))) > MAX_LINE:
            self._refuse(replies.DATA_LINE_TOO_LONG, "line too long")
            return b""
        return text[2:]
