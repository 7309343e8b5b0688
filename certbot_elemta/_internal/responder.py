"""What the plugin's two challenge responders (``http01.py``, ``tlsalpn01.py``) share: the
answers written for one certbot run (also to the cluster's store), elemta's cache made
ready first, a listener of the plugin's own only while nothing else listens, and the
clean-up that removes the answers and stops that listener."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from certbot import achallenges, errors

from certbot_elemta._internal import constants
from certbot_elemta._internal.cluster import SharedAnswers
from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import remove_answer
from elemta_smtp.cache.redis_store import RedisStore
from elemta_smtp.errors import CacheError
from elemta_smtp.units import Address


class Listener(Protocol):
    def stop(self) -> None: ...


L = TypeVar("L", bound=Listener)


def is_listening(address: Address, timeout: float = constants.CONNECT_TIMEOUT) -> bool:
    """Does anything accept TCP connections on ``address`` right now?"""
    try:
        with socket.create_connection((address.connect_host, address.port), timeout=timeout):
            return True
    except OSError:
        return False


class Responder(Generic[L]):
    """The answers of one certbot run, by challenge, and the listener started for them."""

    kind: ClassVar[str]  # "http-01" | "tls-alpn-01": the cluster store's name for them

    def __init__(self, cache_dir: Path, server_factory: Callable[[Address, Path], L],
                 shared: RedisStore | None) -> None:
        self.cache_dir = cache_dir
        self.shared = SharedAnswers(shared)  # a cluster: every host answers (cluster.py)
        self._server_factory = server_factory
        self._written: dict[achallenges.AnnotatedChallenge, Path] = {}
        self.server: L | None = None

    def _prepare_cache(self) -> None:
        try:
            layout.ensure_layout(self.cache_dir)
        except (CacheError, OSError) as exc:
            raise errors.PluginError(f"Could not prepare elemta's cache {self.cache_dir}: {exc}. "
                                     "Run certbot as the user that owns cache_dir (or root).") from exc

    def _serve(self, address: Address, folder: Path) -> None:
        """Start a listener of our own on ``address`` for ``folder`` unless one answers."""
        if self.server is None and not is_listening(address):
            self.server = self._server_factory(address, folder)

    def cleanup(self, achalls: Sequence[achallenges.AnnotatedChallenge]) -> None:
        """Remove the answers of ``achalls``; stop our own listener once none are left."""
        for achall in achalls:
            path = self._written.pop(achall, None)
            if path is not None:
                remove_answer(path)
                self.shared.unshare(self.kind, path.name)
        if not self._written and self.server is not None:
            self.server.stop()
            self.server = None
        if not self._written:
            self.shared.close()
