"""Every log line about SMTP connections and messages, worded once (as replies.py
words every reply). Each function returns a ``Log`` action for the adapter to emit;
the named fields are what an admin's log pipeline can match on.

The per-message line is ``message <id> from=<sender> rcpts=<n> size=<bytes> <result>``
with result ``queued``, ``deferred (451): <reason>`` or ``failed (554): <reason>``
(the reply and the result are chosen together in ``delivery_outcome``); a message
refused while it is received is ``message <id> from=<sender> rcpts=<n> refused:
<reason>``, and one refused at MAIL for its declared size has no id yet (``-``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.actions import BeginMessage, Log

if TYPE_CHECKING:
    from elemta_smtp.errors import DeliveryFailed

_NOT_ACKNOWLEDGED = " (connection already lost: not acknowledged, the client will retry)"


def delivery_outcome(queue_id: str, failure: DeliveryFailed | None) -> tuple[bytes, str]:
    """The reply to the client and the log's result text for a delivery: stored (250),
    a transient failure (451, the client retries) or a permanent one (554)."""
    if failure is None:
        return replies.queued(queue_id), "queued"
    if failure.transient:
        return replies.LOCAL_ERROR, f"deferred (451): {failure.reason}"
    return replies.DELIVERY_FAILED, f"failed (554): {failure.reason}"


def message_delivered(message: BeginMessage, size: int, result: str, stored: bool,
                      acknowledged: bool) -> Log:
    """The one line for a message that reached the sink."""
    if not acknowledged:
        result += _NOT_ACKNOWLEDGED
    return Log("info" if stored else "error",
               "message {queue_id} from=<{sender}> rcpts={rcpts} size={size} {result}",
               {"queue_id": message.queue_id, "sender": message.sender,
                "rcpts": len(message.recipients), "size": size, "result": result})


def message_refused(message: BeginMessage, reason: str) -> Log:
    """The one line for a message dropped while it was received (too big, bad content,
    idle timeout, connection lost)."""
    return Log("info", "message {queue_id} from=<{sender}> rcpts={rcpts} refused: {reason}",
               {"queue_id": message.queue_id, "sender": message.sender,
                "rcpts": len(message.recipients), "reason": reason})


def refused_at_mail(sender: str, size: int, reason: str, peer: str) -> Log:
    """The one line for a message refused at MAIL for its declared SIZE= (it has no id)."""
    return Log("info", "message - from=<{sender}> rcpts=0 size={size} refused: {reason} "
                       "(MAIL from {peer})",
               {"queue_id": "-", "sender": sender, "rcpts": 0, "size": size, "reason": reason,
                "peer": peer})


def connection_refused(peer: str, reply: bytes) -> Log:
    """A connection turned away with a 421 (connection cap, shutting down)."""
    return Log("warn", "refused connection from {peer}: {reason}",
               {"peer": peer, "reason": reply.decode("ascii", "replace").strip()})


def closing_idle(peer: str) -> Log:
    return Log("info", "closing idle connection from {peer}", {"peer": peer})


def closing_slow_line(peer: str) -> Log:
    return Log("info", "closing connection from {peer}: one command line took longer than "
                       "the idle timeout", {"peer": peer})


def dropping_no_handshake(peer: str) -> Log:
    return Log("info", "dropping {peer}: no TLS handshake within the idle timeout",
               {"peer": peer})


def handshake_failed(peer: str, reason: str) -> Log:
    return Log("info", "TLS handshake with {peer} failed: {reason}",
               {"peer": peer, "reason": reason})


def connection_closed(peer: str, close_reason: str, tls: str, messages: int) -> Log:
    """The one line per connection, when it ends."""
    return Log("info", "connection from {peer} closed ({close_reason}): tls={tls} "
                       "messages={messages}",
               {"peer": peer, "close_reason": close_reason, "tls": tls, "messages": messages})
