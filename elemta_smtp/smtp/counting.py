"""The SMTP metrics, counted by the adapter (protocol.py) where it already works.

Messages are counted from the session's own ``Log`` actions: the per-message line
(loglines.py) already carries the outcome, so the adapter hands each ``Log`` it emits to
``SMTPCounts.logged``, which looks its format text up in a small table (the texts are
taken from loglines.py itself, so a rewording cannot silently stop the counting) and
bumps a pre-bound counter. The rest is one call per connection (accepted, TLS
handshake) and one clock reading per message (delivery time). With ``[metrics]`` off
the adapter has no ``SMTPCounts`` and does none of this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from elemta_smtp.metrics import (
    Metrics,
    Tally,
    close_reason,
    deferral_reason,
    failure_reason,
    refusal_reason,
)
from elemta_smtp.smtp import loglines
from elemta_smtp.smtp.actions import BeginMessage, Log

_SAMPLE = BeginMessage("-", "", (), b"")
#: The format texts of the lines counted (taken from loglines.py, never retyped).
DELIVERED = loglines.message_delivered(_SAMPLE, 0, "queued", True, True).text
REFUSED = loglines.message_refused(_SAMPLE, "").text
REFUSED_AT_MAIL = loglines.refused_at_mail("", 0, "", "").text
HANDSHAKE_FAILED = loglines.handshake_failed("", "").text
CLOSED = loglines.connection_closed("", "", "", 0).text

Fields = Mapping[str, object]


class SMTPCounts:
    """What the SMTP adapter counts into ``Metrics``; one per daemon."""

    def __init__(self, metrics: Metrics) -> None:
        m = self.metrics = metrics
        self._accepted = m.messages.labels("accepted")
        self._refused = m.messages.labels("refused")
        self._deferred = m.messages.labels("deferred")
        self._listener = {False: m.connections_accepted.labels("smtp"),
                          True: m.connections_accepted.labels("smtps")}
        self._handshake_failed = {False: m.tls_handshake_failures.labels("starttls"),
                                  True: m.tls_handshake_failures.labels("smtps")}
        self._observe_delivery = m.delivery_seconds.observe
        self._cap, self._shutdown = (m.connections_refused.labels("cap"),
                                     m.connections_refused.labels("shutdown"))
        self._by_version: dict[str | None, Callable[[], None]] = {}
        self._by_close: dict[object, Callable[[], None]] = {}
        self._by_refusal: dict[object, Callable[[], None]] = {}
        self._handlers: dict[str, Callable[[Fields, bool], None]] = {
            DELIVERED: self._delivered, REFUSED: self._refused_message,
            REFUSED_AT_MAIL: self._refused_at_mail, HANDSHAKE_FAILED: self._failed_handshake,
            CLOSED: self._closed}

    # --- the adapter's calls ---

    def logged(self, action: Log, implicit_tls: bool) -> None:
        """The adapter emitted ``action``: count it if it is a line that counts."""
        handler = self._handlers.get(action.text)
        if handler is not None:
            handler(action.fields, implicit_tls)

    def connection_accepted(self, implicit_tls: bool) -> None:
        self._listener[implicit_tls].inc()

    def connection_refused(self, shutting_down: bool) -> None:
        (self._shutdown if shutting_down else self._cap).inc()

    def handshake_done(self, version: str | None) -> None:
        inc = self._by_version.get(version)
        if inc is None:
            inc = self._by_version[version] = self.metrics.tls_handshakes.labels(
                version or "unknown").inc
        inc()

    def delivery_time(self, seconds: float) -> None:
        self._observe_delivery(seconds)

    # --- one per counted line ---

    def _delivered(self, fields: Fields, implicit_tls: bool) -> None:
        result = str(fields["result"])
        if result.startswith("queued"):
            self._accepted.inc()
        elif result.startswith("deferred"):
            self._deferred.inc()
            self.metrics.messages_deferred.labels(deferral_reason(result)).inc()
        else:
            self._refused.inc()
            self.metrics.messages_refused.labels(failure_reason(result)).inc()

    def _refused_message(self, fields: Fields, implicit_tls: bool) -> None:
        self._refused.inc()
        _bump(self._by_refusal, fields["reason"], self.metrics.messages_refused, refusal_reason)

    def _refused_at_mail(self, fields: Fields, implicit_tls: bool) -> None:
        self._refused.inc()
        self.metrics.messages_refused.labels("too_big").inc()

    def _failed_handshake(self, fields: Fields, implicit_tls: bool) -> None:
        self._handshake_failed[implicit_tls].inc()

    def _closed(self, fields: Fields, implicit_tls: bool) -> None:
        _bump(self._by_close, fields["close_reason"], self.metrics.connections_closed,
              close_reason)


def _bump(cache: dict[object, Callable[[], None]], reason: object, family: Tally,
          word: Callable[[str], str]) -> None:
    """Count ``reason`` (free text from a log line) under its fixed word in ``family``; the
    few reasons there are are each looked up once, then bumped straight from ``cache``."""
    inc = cache.get(reason)
    if inc is None:
        inc = cache[reason] = family.labels(word(str(reason))).inc
    inc()
