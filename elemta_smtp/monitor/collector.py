"""The gauges read at scrape time: what is true now, not counted as it happens.

``StateCollector`` asks the daemon, at each scrape, for the certificates ServerTLS
serves and the state of its listeners, and turns them into gauges: a certificate's
not-after and days left (one series per DNS name), each listener up or not, and the
health verdict as 0/1, so an alert can fire on it without scraping ``/healthz``; in a
cluster, whether Redis answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from elemta_smtp.monitor.health import DAY, SOURCE, Health, ListenerState
from elemta_smtp.tls.context import ServedCertificate

CERT_LABELS = ["name", "source", "key_type"]


def certificate_families(served: Sequence[ServedCertificate], now: datetime
                         ) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """``elemta_certificate_not_after_seconds`` and ``elemta_certificate_days_left``, one
    series per DNS name of every served certificate (a name served twice keeps the one
    that expires last, as SNI would pick)."""
    not_after = GaugeMetricFamily(
        "elemta_certificate_not_after_seconds", "When the served certificate expires (Unix "
        "time), per DNS name; source: live (the cache), cert_file ([tls] cert_file) or "
        "bootstrap (self-signed)", labels=CERT_LABELS)
    days_left = GaugeMetricFamily(
        "elemta_certificate_days_left", "Days until the served certificate expires "
        "(negative: expired), per DNS name", labels=CERT_LABELS)
    latest: dict[tuple[str, str, str], ServedCertificate] = {}
    for cert in served:
        for name in cert.names:
            key = (name, SOURCE.get(cert.kind, cert.kind), cert.key_type or "unknown")
            if key not in latest or cert.not_after > latest[key].not_after:
                latest[key] = cert
    for key, cert in sorted(latest.items()):
        not_after.add_metric(list(key), cert.not_after.timestamp())
        days_left.add_metric(list(key), (cert.not_after - now).total_seconds() / DAY)
    return not_after, days_left


class StateCollector(Collector):
    """Scrape-time gauges from the daemon's state (callables, asked at each scrape)."""

    def __init__(self, served: Callable[[], Sequence[ServedCertificate]],
                 listeners: Callable[[], Sequence[ListenerState]],
                 health: Callable[[], Health], now: Callable[[], datetime], *,
                 redis_up: Callable[[], bool | None] | None = None) -> None:
        self._served = served
        self._listeners = listeners
        self._health = health
        self._now = now
        self._redis_up = redis_up  # None: not in a cluster

    def collect(self) -> Iterator[Metric]:
        yield from certificate_families(self._served(), self._now())
        up = GaugeMetricFamily("elemta_listener_up", "1 while the listener accepts "
                               "connections", labels=["listener", "address"])
        for item in self._listeners():
            up.add_metric([item.name, item.address], 1.0 if item.up else 0.0)
        yield up
        yield GaugeMetricFamily("elemta_healthy", "1 when GET /healthz answers 200: every "
                                "listener up and a valid certificate (not the bootstrap) served "
                                "for the domain", value=1.0 if self._health().ok else 0.0)
        if self._redis_up is not None:
            state = self._redis_up()
            if state is not None:  # None: no answer from Redis yet since the start
                yield GaugeMetricFamily(
                    "elemta_cluster_redis_up", "1 while the cluster's Redis answers, 0 while it "
                    "is unreachable (the node serves on, issues nothing)", value=float(state))
