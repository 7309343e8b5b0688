"""Streaming one connection's messages to the sink: the I/O half of delivery.

The session says ``BeginMessage`` / ``MessageData`` / ``EndMessage`` /
``AbortMessage``; ``MessageStream`` hands the chunks to the sink's writer as they
come (a message is never held whole in memory), turns every sink error into a
``DeliveryFailed`` (an unexpected exception is logged with its traceback and
becomes a transient failure: 451, never a crash), and once the writer's commit
has answered calls ``done`` with the outcome (``None``: stored) for the session
to word and answer.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.smtp.actions import BeginMessage
from elemta_smtp.smtp.sink import DeliveryFailed, MessageSink, MessageWriter

log = Logger(namespace="elemta.smtp")


class MessageStream:
    """One message at a time from the session to ``sink``; ``done`` gets each outcome."""

    __slots__ = ("_done", "_failure", "_sink", "_writer")

    def __init__(self, sink: MessageSink, done: Callable[[DeliveryFailed | None], None]) -> None:
        self._sink = sink
        self._done = done
        self._writer: MessageWriter | None = None
        self._failure: DeliveryFailed | None = None  # why the message cannot be stored

    def begin(self, message: BeginMessage) -> None:
        self._writer, self._failure = None, None
        try:
            self._writer = self._sink.begin(message.recipients)
            self._writer.write(message.received_header)
        except Exception as exc:
            self._failed(exc)

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            writer.write(data)
        except Exception as exc:
            self._failed(exc)

    def end(self) -> None:
        """The message is complete: commit it; ``done`` is called once that has answered."""
        writer, self._writer = self._writer, None
        if writer is None:
            self._done(self._failure or DeliveryFailed("no message writer"))
            return
        try:
            result = writer.commit()
        except Exception as exc:
            result = fail(exc)
        result.addCallbacks(self._committed, self._commit_failed)
        result.addErrback(lambda f: log.failure("error after delivery", f))

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()

    def _failed(self, exc: BaseException) -> None:
        """A sink error while the message is received (called inside ``except``)."""
        if isinstance(exc, DeliveryFailed):
            self._failure = exc
        else:
            log.failure("message sink raised an unexpected error")
            self._failure = DeliveryFailed(f"unexpected error: {exc!r}", transient=True)
        self.abort()

    def _committed(self, _: object) -> None:
        self._done(None)

    def _commit_failed(self, failure: Failure) -> None:
        exc = failure.value
        if not isinstance(exc, DeliveryFailed):
            log.failure("message sink commit failed unexpectedly", failure)
            exc = DeliveryFailed(f"unexpected error: {exc!r}", transient=True)
        self._done(exc)
