"""Hearing of new certificates and challenge answers at once: a thread subscribed to the
cluster's ``certificates`` and ``challenges`` channels (Redis pub/sub) that hands every
message to the reactor.

When the subscription breaks (Redis restarted, the network went away) the thread says so
to the reactor and subscribes again after a pause; each time it (re)subscribes it says so
too, so the node can catch up on what it missed. The periodic check in ``sync.py`` is the
fallback for a subscription that dies without an error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import redis

from elemta_smtp.cache.redis_store import RedisStore
from elemta_smtp.cluster.link import ThreadReactor

#: Pause before subscribing again after a failure, in seconds.
RETRY = 1.0
#: How long one wait for a message lasts: the most the thread takes to notice ``stop``.
POLL = 0.5


class Subscriber:
    """``on_message(name)`` for every certificate published, ``on_challenge(text)`` for every
    challenge answer shared or removed ("put tls-alpn-01 mail.example.com");
    ``on_state(True, "")`` when subscribed, ``on_state(False, reason)`` when the
    subscription broke. All are called in the reactor thread."""

    def __init__(self, store: RedisStore, reactor: ThreadReactor,
                 on_message: Callable[[str], object],
                 on_state: Callable[[bool, str], object],
                 on_challenge: Callable[[str], object] | None = None) -> None:
        self._store = store
        self._reactor = reactor
        self._on_message = on_message
        self._on_state = on_state
        self._on_challenge = on_challenge
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="elemta-redis-subscriber",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within ``POLL`` seconds) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._store.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._store.channel, self._store.challenge_channel)
                self._reactor.callFromThread(self._on_state, True, "")
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(_text(message.get("channel", b"")),
                                       _text(message.get("data", b"")))
            except (redis.RedisError, OSError) as exc:
                reason = self._store.masked(str(exc) or type(exc).__name__)
                self._reactor.callFromThread(self._on_state, False, reason)
                self._stop.wait(RETRY)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _dispatch(self, channel: str, text: str) -> None:
        if channel == self._store.challenge_channel:
            if self._on_challenge is not None:
                self._reactor.callFromThread(self._on_challenge, text)
        else:
            self._reactor.callFromThread(self._on_message, text)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
