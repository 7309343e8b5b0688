"""HTTP-01 challenge work for the ``elemta`` authenticator.

``perform`` writes each key authorization into elemta's webroot. The running
daemon serves that directory on ``[tls.letsencrypt] http_addr``; when nothing
listens there, a ``ChallengeServer`` serves it from certbot until ``cleanup``.
Before answering the CA, one local request checks that the address really
serves what was written, so a foreign web server on the port is reported
plainly instead of burning a failed validation at the CA. In a cluster each answer is
also written to the shared store (with a time to live), where every other host finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from acme import challenges
from certbot import achallenges, errors

from certbot_elemta._internal.responder import Responder
from certbot_elemta._internal.webserver import ChallengeServer
from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import PATH_PREFIX, fetch_answer, write_answer
from elemta_smtp.cache.redis_store import RedisStore
from elemta_smtp.errors import ChallengeError
from elemta_smtp.units import Address

logger = logging.getLogger(__name__)

ServerFactory = Callable[[Address, Path], ChallengeServer]


def self_check_problem(address: Address, url: str, validation: str,
                       result: tuple[int, bytes] | OSError) -> str | None:
    """What is wrong with a local self-check result, as a sentence; None when it passed."""
    if isinstance(result, OSError):
        return (f"The HTTP-01 answer could not be fetched from {address} ({url}): {result}. "
                "Check that the elemta daemon's HTTP-01 listener is up ([tls.letsencrypt] "
                "http_addr) and try again.")
    status, body = result
    if status == 200 and body.strip() == validation.encode("ascii"):
        return None
    return (f"Something listens on {address} but it does not serve elemta's HTTP-01 answers "
            f"({url} gave HTTP {status}). Another web server may be using that port, or the "
            "daemon runs with a different elemta.toml (cache_dir). Stop the other program or "
            "pass the daemon's config with --elemta-config, then try again.")


class HTTP01Responder(Responder[ChallengeServer]):
    """Writes, serves (when needed) and removes HTTP-01 answers for one certbot run."""

    kind = "http-01"

    def __init__(self, cache_dir: Path, http_addr: Address | None,
                 server_factory: ServerFactory = ChallengeServer,
                 shared: RedisStore | None = None) -> None:
        super().__init__(cache_dir, server_factory, shared)
        self.http_addr = http_addr
        self.challenge_dir = layout.challenge_dir(cache_dir)

    def perform(self, achalls: Sequence[achallenges.AnnotatedChallenge]
                ) -> list[challenges.ChallengeResponse]:
        """Write every answer, make sure it is served, check it; return the responses."""
        self._prepare_cache()
        responses: list[challenges.ChallengeResponse] = []
        for achall in achalls:
            response, validation = achall.response_and_validation()
            token = achall.chall.encode("token")
            try:
                self._written[achall] = write_answer(self.challenge_dir, token, validation)
            except ChallengeError as exc:
                raise errors.PluginError(str(exc)) from exc
            self.shared.share(self.kind, token, validation)
            responses.append(response)
            logger.debug("Wrote HTTP-01 answer for %s to %s", achall.identifier.value,
                         self._written[achall])
        if self.http_addr is None:
            logger.warning("[tls.letsencrypt] http_addr is empty, so elemta does not serve "
                           "HTTP-01: the answers are only written to %s; something must serve "
                           "that directory on port 80.", self.challenge_dir)
            return responses
        self._serve(self.http_addr, self.challenge_dir)
        for achall in achalls:
            self._self_check(achall)
        return responses

    def _self_check(self, achall: achallenges.AnnotatedChallenge) -> None:
        assert self.http_addr is not None
        token = achall.chall.encode("token")
        host = achall.identifier.value
        url = f"http://{host}{PATH_PREFIX}{token}"
        _, validation = achall.response_and_validation()
        result: tuple[int, bytes] | OSError
        try:
            result = fetch_answer(self.http_addr.connect_host, self.http_addr.port, token, host)
        except OSError as exc:
            result = exc
        problem = self_check_problem(self.http_addr, url, validation, result)
        if problem:
            raise errors.PluginError(problem)
