"""Every metric the daemon exports, in one private prometheus-client registry.

``Metrics`` holds the families; the modules that see an event update them through the
instance they are given (None when ``[metrics] listen_addr`` is off, so the SMTP path
then counts nothing). Adding a metric is one line in ``Metrics.__init__`` plus the call
that updates it. What is known at any moment (the certificates served, connections
open, health) is not counted at all: ``monitor/collector.py`` reads it at scrape time.

Label values are short fixed words, never free text: the reason classifiers below map
a log line's reason (which may name a file or an address) onto one word each. No label
ever carries a mail address.

Low in the layers: it imports prometheus-client and nothing of elemta, so the TLS, SMTP
and ACME modules can take a ``Metrics`` without importing upward.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Every metric name starts with this.
PREFIX = "elemta_"
#: Delivery time buckets (seconds): a durable Maildir write takes about a millisecond on
#: an idle disk; a disk that stalls shows in the upper buckets.
DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0)

# A counter's `_created` series doubles every scrape for no use in alerts or dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]


# --- the SMTP path's counters: plain numbers, read at scrape time ----------------------
# prometheus-client's Counter takes a lock and checks itself on every inc (about 0.4 us,
# three or four per message); the SMTP path is counted on the reactor thread only, and
# the scrape is served there too, so a plain attribute is enough: about 0.05 us.

class Cell:
    """One labelled series of a ``Tally``: ``inc()`` adds to ``value``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Tally(Collector):
    """A counter family for the reactor thread (no lock), registered in ``registry`` and
    rendered like a prometheus-client ``Counter`` (``<name>_total``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._cells: dict[tuple[str, ...], Cell] = {}
        registry.register(self)

    def labels(self, *values: str) -> Cell:
        """The series for these label values (made at first use)."""
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected labels {self._labelnames}, got {values}")
            cell = self._cells[values] = Cell()
        return cell

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, cell in self._cells.items():
            family.add_metric(list(values), cell.value)
        yield family


class TallyHistogram(Collector):
    """A histogram without labels for the reactor thread (no lock), rendered like a
    prometheus-client ``Histogram``."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: over every bound
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], buckets, self._sum)
        yield family


class Metrics:
    """The families; ``registry`` is what the /metrics endpoint renders."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # --- SMTP (smtp/counting.py, as the adapter carries out the session's actions;
        # Tally: see above) ---
        self.messages = Tally(
            "elemta_messages", "Messages by outcome: accepted (250), refused (5xx), deferred "
            "(4xx, the client retries)", ["result"], r)
        self.messages_refused = Tally(
            "elemta_messages_refused", "Refused messages by reason", ["reason"], r)
        self.messages_deferred = Tally(
            "elemta_messages_deferred", "Deferred messages by reason", ["reason"], r)
        self.delivery_seconds = TallyHistogram(
            "elemta_delivery_seconds", "Time from the end of DATA to the durable store's "
            "answer", DELIVERY_BUCKETS, r)
        self.connections_accepted = Tally(
            "elemta_connections_accepted", "SMTP connections accepted, by listener (smtp: the "
            "plain port, smtps: implicit TLS)", ["listener"], r)
        self.connections_refused = Tally(
            "elemta_connections_refused", "SMTP connections refused with 421, by reason (cap: "
            "max_connections reached, shutdown)", ["reason"], r)
        self.connections_closed = Tally(
            "elemta_connections_closed", "SMTP connections ended, by how", ["reason"], r)
        self.connections_open = Gauge(
            "elemta_connections_open", "SMTP connections open now", registry=r)
        self.tls_handshakes = Tally(
            "elemta_tls_handshakes", "TLS handshakes completed (SMTPS and STARTTLS), by "
            "protocol version", ["version"], r)
        self.tls_handshake_failures = Tally(
            "elemta_tls_handshake_failures", "TLS handshakes that failed or were abandoned, by "
            "listener (smtps, starttls)", ["listener"], r)
        # --- served certificates (tls/context.py) ---
        self.certificate_reloads = Counter(
            "elemta_certificate_reloads", "Certificate reloads (SIGHUP, after certbot, at "
            "start)", registry=r)
        self.certificate_rejected = Counter(
            "elemta_certificate_rejected", "Certificate files rejected at a reload, by reason",
            ["reason"], registry=r)
        # --- obtaining and renewing (acme/manager.py) ---
        self.acquisition_attempts = Counter(
            "elemta_certificate_acquisition_attempts", "certbot certonly runs", ["name"],
            registry=r)
        self.acquisition_failures = Counter(
            "elemta_certificate_acquisition_failures", "certbot certonly runs that gave no "
            "served certificate", ["name"], registry=r)
        self.renewal_attempts = Counter(
            "elemta_certificate_renewal_attempts", "certbot renew runs", ["name"], registry=r)
        self.renewal_failures = Counter(
            "elemta_certificate_renewal_failures", "certbot renew runs that did not change "
            "the served certificate", ["name"], registry=r)
        self.renewal_last_success = Gauge(
            "elemta_certificate_renewal_last_success_timestamp_seconds", "When this daemon "
            "last renewed the certificate (Unix time)", ["name"], registry=r)
        self.renewal_failing_since = Gauge(
            "elemta_certificate_renewal_failing_since_timestamp_seconds", "When the current run "
            "of failed renewals began (Unix time; 0 while renewal is not failing)", ["name"],
            registry=r)
        # --- notices (acme/notifier.py) ---
        self.notices_sent = Counter(
            "elemta_notices_sent", "Notices mailed, by kind", ["kind"], registry=r)
        self.notices_failed = Counter(
            "elemta_notices_failed", "Notices that could not be mailed (retried at the next "
            "check), by kind", ["kind"], registry=r)
        # --- challenges and MTA-STS (acme/http01.py, acme/https.py) ---
        self.challenges_served = Counter(
            "elemta_acme_challenges_served", "ACME challenge answers served, by type "
            "(http-01, tls-alpn-01)", ["type"], registry=r)
        self.mta_sts_policies_served = Counter(
            "elemta_mta_sts_policies_served", "MTA-STS policies served on the HTTPS listener",
            registry=r)


# --- reasons: free text from a log line -> one fixed word ------------------------------

#: Substrings of the session's refusal reasons (dataframe.py, session.py, dialogue.py).
_REFUSED = (("exceeds max_message_size", "too_big"), ("too big", "too_big"),
            ("NUL byte", "nul_byte"), ("bare LF or CR", "bare_newline"),
            ("line too long", "line_too_long"), ("idle timeout", "idle_timeout"),
            ("connection lost", "connection_lost"))

#: Substrings of ``InvalidCertificate`` reasons (certs/bundle.py, certs/validate.py,
#: cache/live.py) and ServerTLS's own, in the order they are tried.
_REJECTED = (("does not exist", "missing"), ("cannot read", "unreadable"),
             ("cut short", "truncated"), ("cut off", "truncated"),
             ("too big for a certificate", "malformed"), ("no PEM data", "malformed"),
             ("no CERTIFICATE block", "malformed"), ("expected exactly one", "malformed"),
             ("private key cannot be read", "malformed"), ("encrypted", "encrypted_key"),
             ("does not belong", "key_mismatch"), ("chain", "chain"),
             ("not signed", "chain"), ("expired", "expired"), ("not valid yet", "not_yet_valid"),
             ("the certificate is for", "wrong_name"), ("is not served", "key_type"),
             ("too weak", "key_type"), ("keys are not served", "key_type"),
             ("OpenSSL refused", "openssl"))


def _classify(text: str, table: tuple[tuple[str, str], ...]) -> str:
    for needle, word in table:
        if needle in text:
            return word
    return "other"


def refusal_reason(reason: str) -> str:
    """The label for a message refused while it was received (``message_refused``'s
    reason): too_big, nul_byte, bare_newline, line_too_long, idle_timeout,
    connection_lost, or other."""
    return _classify(reason, _REFUSED)


def rejection_reason(reason: str) -> str:
    """The label for a rejected certificate file (``InvalidCertificate.reason``): missing,
    unreadable, truncated, malformed, encrypted_key, key_mismatch, chain, expired,
    not_yet_valid, wrong_name, key_type, openssl, or other."""
    return _classify(reason, _REJECTED)


def close_reason(reason: str) -> str:
    """The label for how an SMTP connection ended (the session's close reason)."""
    return _CLOSE.get(reason, "other")


_CLOSE = {"quit": "quit", "client closed": "client_closed", "idle timeout": "idle_timeout",
          "too many errors": "too_many_errors", "shutdown": "shutdown",
          "non-SMTP command": "not_smtp", "TLS handshake on the plain port": "not_smtp"}


_ERRNO = re.compile(r"\((E[A-Z0-9]+)\b")


def deferral_reason(reason: str) -> str:
    """The label for a message the store could not take now (451, a ``DeliveryFailed``
    marked transient): the errno name in lower case (enospc, eacces, eio ...) when the
    reason has one, internal_error for an unexpected error, else other."""
    match = _ERRNO.search(reason)
    if match is not None:
        return match.group(1).lower()
    if "internal error" in reason or "unexpected error" in reason:
        return "internal_error"
    return "other"


def failure_reason(reason: str) -> str:
    """The label for a message the store refused for good (554): bad_recipient or
    delivery_failed."""
    return "bad_recipient" if "cannot deliver to" in reason else "delivery_failed"
