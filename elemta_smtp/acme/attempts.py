"""What the certificate manager needs around an attempt to obtain or renew: the runner
and the cluster's lock it is given (``IssuanceLock``), whether this process may renew a
lineage at all (``RenewalAccess``), the backoff between failed attempts (``Retry``), and
the counting of attempts for the metrics endpoint (``CertCounts``; nothing when metrics
are off)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from elemta_smtp.acme.renewal import retry_delay
from elemta_smtp.acme.rollover import RolloverError, put_back_interrupted
from elemta_smtp.acme.runner import RunResult
from elemta_smtp.acme.slots import Slot
from elemta_smtp.cache.lineages import Lineage, User, renewal_blocker
from elemta_smtp.cluster.issuance import GO, Permit
from elemta_smtp.config import Config

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics

log = Logger(namespace="elemta.acme")


class Runner(Protocol):
    def run(self, argv: Sequence[str], timeout: float) -> Deferred[RunResult]: ...


class Coordinator(Protocol):
    """The cluster's issuance lock (``cluster.issuance.ClusterIssuance``)."""

    def begin(self, name: str) -> Deferred[Permit]: ...
    def end(self, permit: Permit) -> Deferred[None]: ...


class IssuanceLock:
    """Obtaining and renewing run under the cluster's issuance lock, granted at once on a
    single host (no ``coordinator``). When it is refused, ``take_wait`` says when to look
    again (what the coordinator said, else ``interval``)."""

    def __init__(self, coordinator: Coordinator | None, domain: str, interval: float) -> None:
        self._coordinator = coordinator
        self._domain = domain
        self._interval = interval
        self._wait: float | None = None

    @property
    def shared(self) -> bool:
        """Is this node one of a cluster?"""
        return self._coordinator is not None

    async def begin(self) -> Permit:
        if self._coordinator is None:
            return GO
        permit = await self._coordinator.begin(self._domain)
        if not permit.granted:
            self._wait = permit.retry_after if permit.retry_after is not None else self._interval
        return permit

    async def end(self, permit: Permit) -> None:
        if self._coordinator is not None and permit.lease is not None:
            await self._coordinator.end(permit)

    def take_wait(self) -> float | None:
        """The wait after a refusal since the last call (None: not refused)."""
        wait, self._wait = self._wait, None
        return wait


class RenewalAccess:
    """Can this process renew a lineage (certbot's folders may be another user's; an
    interrupted rollover must be undone first)? Said once per certificate and lineage; the
    expiry notices remain the backstop."""

    def __init__(self, config: Config, user: User, slot: Slot) -> None:
        self._config = config
        self._user = user
        self._slot = slot
        self._logged: set[tuple[str, str]] = set()

    def blocked(self, serial: str, lineage: Lineage) -> bool:
        le = self._config.tls.letsencrypt
        try:  # a `dane rollover finish` killed while the next key was in the lineage
            restored = put_back_interrupted(le.cache_dir, self._slot.domain, self._slot.variant)
        except RolloverError as exc:
            if (serial, "rollover") not in self._logged:
                self._logged.add((serial, "rollover"))
                log.error("not renewing: {error}", error=str(exc))
            return True
        if restored is not None:
            log.warn("put certbot's own key back into {path}: an interrupted `elemta dane "
                     "rollover finish` had left the next key there", path=str(restored))
        blocker = renewal_blocker(lineage, self._user, cache_dir=le.cache_dir, domain=le.domain,
                                  config_path=self._config.path)
        if blocker is None:
            return False
        key = (serial, str(lineage.config_dir))
        if key not in self._logged:
            self._logged.add(key)
            log.warn("{blocker}", blocker=blocker[:1].upper() + blocker[1:])
        return True


@dataclass
class Retry:
    """A run of failed attempts and when the next may start (clock seconds)."""

    failures: int = 0
    not_before: float = 0.0

    def failed(self, now: float, at_least: float = 0.0) -> float:
        """Count a failure; the delay until the next attempt (backoff, at least ``at_least``)."""
        self.failures += 1
        delay = max(retry_delay(self.failures), at_least)
        self.not_before = now + delay
        return delay

    def reset(self) -> None:
        self.failures, self.not_before = 0, 0.0


def one_line(text: str) -> str:
    """certbot's several-line reason as one log line."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


class CertCounts:
    """The manager's series for one certificate (label ``name``: the domain)."""

    def __init__(self, metrics: Metrics | None, domain: str) -> None:
        self._metrics = metrics
        self._domain = domain
        if metrics is not None:  # the series exist from the start (0: renewal not failing)
            metrics.renewal_failing_since.labels(domain).set(0)
            for family in (metrics.acquisition_attempts, metrics.acquisition_failures,
                           metrics.renewal_attempts, metrics.renewal_failures):
                family.labels(domain)

    def attempt(self, what: str) -> None:
        """A certbot run starts: ``what`` is "acquisition" or "renewal"."""
        if self._metrics is not None:
            family = self._metrics.acquisition_attempts if what == "acquisition" \
                else self._metrics.renewal_attempts
            family.labels(self._domain).inc()

    def failure(self, what: str, now: float, first: bool) -> None:
        """A run failed; the ``first`` renewal failure of a run marks when renewal began
        failing."""
        metrics = self._metrics
        if metrics is None:
            return
        if what == "acquisition":
            metrics.acquisition_failures.labels(self._domain).inc()
            return
        metrics.renewal_failures.labels(self._domain).inc()
        if first:
            metrics.renewal_failing_since.labels(self._domain).set(now)

    def renewed(self, now: float) -> None:
        if self._metrics is not None:
            self._metrics.renewal_last_success.labels(self._domain).set(now)
            self._metrics.renewal_failing_since.labels(self._domain).set(0)
