"""Every SMTP reply elemta sends, as named constants (wire bytes, CRLF included).

Codes follow RFC 5321; the second number is the RFC 3463 enhanced status
code (RFC 2034), which is left out of the greeting and HELO/EHLO replies as
RFC 2034 says. Tests compare against these names, never against literals.
Replies that carry a value (host name, queue id) are small functions.
"""

from __future__ import annotations

# --- 2xx / 3xx: success and intermediate ---
OK = b"250 2.0.0 OK\r\n"
SENDER_OK = b"250 2.1.0 Sender OK\r\n"
RECIPIENT_OK = b"250 2.1.5 Recipient OK\r\n"
RESET_OK = b"250 2.0.0 Reset OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"
HELP = b"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\r\n"
CANNOT_VRFY = b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
READY_FOR_TLS = b"220 2.0.0 Ready to start TLS\r\n"
START_MAIL_INPUT = b"354 End data with <CR><LF>.<CR><LF>\r\n"

# --- 4xx: transient, the client retries ---
TOO_MANY_RECIPIENTS = b"452 4.5.3 Too many recipients\r\n"
LOCAL_ERROR = b"451 4.3.0 Temporary local problem, try again later\r\n"
TOO_MANY_ERRORS = b"421 4.7.0 Too many errors\r\n"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down\r\n"
NON_SMTP_COMMAND = b"421 4.7.0 Non-SMTP command, closing connection\r\n"
TLS_ON_PLAIN_PORT = (b"421 4.7.0 TLS handshake on a plain SMTP port: send STARTTLS first, "
                     b"or use the implicit-TLS port\r\n")

# --- 5xx: bad command sequence (RFC 5321 4.3.2) ---
NEED_HELO = b"503 5.5.1 Send HELO/EHLO first\r\n"
NEED_EHLO = b"503 5.5.1 Send EHLO first\r\n"
NEED_MAIL = b"503 5.5.1 Need MAIL command first\r\n"
NEED_RCPT = b"503 5.5.1 Need RCPT command first\r\n"
NESTED_MAIL = b"503 5.5.1 Nested MAIL command\r\n"
TLS_ALREADY_ACTIVE = b"503 5.5.1 TLS already active\r\n"
TLS_IN_TRANSACTION = b"503 5.5.1 MAIL transaction in progress; send RSET first\r\n"
NO_VALID_RECIPIENTS = b"554 5.5.1 No valid recipients\r\n"

# --- 5xx: unknown commands and syntax ---
UNKNOWN_COMMAND = b"500 5.5.2 Command unrecognized\r\n"
LINE_TOO_LONG = b"500 5.5.2 Line too long\r\n"
BARE_NEWLINE_COMMAND = b"500 5.5.2 Bare LF in command not allowed; end lines with CRLF\r\n"
NOT_IMPLEMENTED = b"502 5.5.1 Command not implemented\r\n"
TLS_NOT_AVAILABLE = b"502 5.5.1 STARTTLS not available\r\n"
BAD_CHARACTERS = b"501 5.5.2 Syntax error: control or non-ASCII characters in command\r\n"
SYNTAX_HELO = b"501 5.5.4 Syntax: HELO hostname\r\n"
SYNTAX_EHLO = b"501 5.5.4 Syntax: EHLO hostname\r\n"
SYNTAX_MAIL = b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
SYNTAX_RCPT = b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
SYNTAX_VRFY = b"501 5.5.4 Syntax: VRFY address\r\n"
SYNTAX_NO_PARAMETERS = b"501 5.5.4 Syntax: this command takes no parameters\r\n"
BAD_SENDER_SYNTAX = b"501 5.1.7 Bad sender address syntax\r\n"
BAD_RECIPIENT_SYNTAX = b"501 5.1.3 Bad recipient address syntax\r\n"
BAD_PARAMETER_VALUE = b"501 5.5.4 Bad parameter value\r\n"
UNKNOWN_PARAMETER = b"555 5.5.4 Unsupported parameter\r\n"

# --- 5xx: policy and limits ---
RELAY_DENIED = b"554 5.7.1 Relay access denied\r\n"
USER_UNKNOWN = b"550 5.1.1 User unknown\r\n"
SIZE_EXCEEDED = b"552 5.3.4 Message size exceeds fixed limit\r\n"

# --- 5xx: message content refused at the end of DATA ---
# RFC 5321 4.5.3.1.6 gives 500 for over-long *command* lines; for message text
# the content itself is malformed, so elemta refuses it permanently with the
# RFC 3463 media error 5.6.0 after reading the message to its end.
DATA_LINE_TOO_LONG = b"554 5.6.0 Line too long in message (more than 998 characters)\r\n"
DATA_BARE_NEWLINE = b"554 5.6.0 Bare LF/CR in message not allowed\r\n"
DATA_NUL = b"554 5.6.0 NUL bytes in message not allowed\r\n"
DELIVERY_FAILED = b"554 5.3.0 Local delivery failed\r\n"


def greeting(hostname: str) -> bytes:
    """The 220 banner sent when a client connects."""
    return b"220 %s ESMTP elemta\r\n" % hostname.encode("ascii")


def helo(hostname: str) -> bytes:
    """The reply to HELO (no enhanced status code: RFC 2034)."""
    return b"250 %s\r\n" % hostname.encode("ascii")


def ehlo(hostname: str, max_message_size: int, starttls: bool) -> bytes:
    """The multi-line reply to EHLO listing the extensions on offer."""
    lines = [hostname.encode("ascii"), b"PIPELINING", b"SIZE %d" % max_message_size,
             b"8BITMIME", b"ENHANCEDSTATUSCODES"]
    if starttls:
        lines.append(b"STARTTLS")
    return b"".join(b"250-%s\r\n" % line for line in lines[:-1]) + b"250 %s\r\n" % lines[-1]


def queued(queue_id: str) -> bytes:
    """The reply once a message is durably stored."""
    return b"250 2.0.0 OK: queued as %s\r\n" % queue_id.encode("ascii")


def idle_timeout(hostname: str) -> bytes:
    """Sent before closing a connection that stayed silent too long."""
    return b"421 4.4.2 %s Idle timeout, closing connection\r\n" % hostname.encode("ascii")


def code(reply: bytes) -> int:
    """The three-digit code of a reply (of its last line for multi-line replies)."""
    last = reply.rstrip(b"\r\n").rpartition(b"\n")[2]
    return int(last[:3])
