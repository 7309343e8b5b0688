"""What the daemon counts as it works: SMTP through the real adapter on an in-memory
transport, certificate reloads and rejected files through ServerTLS, HTTP-01 answers
through the real site; and the label words the free-text reasons become."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred

from elemta_smtp.cache import layout
from elemta_smtp.errors import DeliveryFailed
from elemta_smtp.metrics import (
    Metrics,
    Tally,
    TallyHistogram,
    close_reason,
    deferral_reason,
    failure_reason,
    refusal_reason,
    rejection_reason,
)
from elemta_smtp.smtp import counting, loglines
from elemta_smtp.smtp.listener import SMTPServer
from elemta_smtp.tls.context import ServerTLS
from tests.certs import CA, make_ca
from tests.fakes import BODY, ENVELOPE, SETTINGS, Harness, site_request, take
from tests.unit.test_tls_context import BAD_KINDS, DOMAIN, NOW
from tests.unit.test_tls_context import Harness as TLSHarness


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of the registry (0 when the series does not exist yet)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Counted(Harness):
    """The SMTP harness of tests/fakes.py, its server counting into ``metrics``."""

    def __init__(self, max_connections: int = 2, auto_commit: bool = True) -> None:
        super().__init__(replace(SETTINGS, max_connections=max_connections), auto_commit)
        self.metrics = Metrics()
        self.server = SMTPServer(self.server.settings, self.sink, None, self.clock,
                                 metrics=self.metrics)

    def value(self, name: str, **labels: str) -> float:
        return value(self.metrics, name, **labels)


def test_a_delivered_message_counts_accepted_and_its_delivery_time() -> None:
    """A message answered 250 is one accepted message and one delivery-time observation."""
    h = Counted(auto_commit=False)
    protocol, transport = h.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    assert h.value("elemta_connections_accepted_total", listener="smtp") == 1
    assert h.value("elemta_connections_open") == 1
    h.clock.advance(0.003)  # the store answers 3 ms later
    committed = h.sink.writers[0].committed
    assert committed is not None
    committed.callback(None)
    assert b"250 2.0.0" in take(transport)
    assert h.value("elemta_messages_total", result="accepted") == 1
    assert h.value("elemta_messages_total", result="refused") == 0
    assert h.value("elemta_delivery_seconds_count") == 1
    assert h.value("elemta_delivery_seconds_sum") == pytest.approx(0.003, rel=1e-3)
    assert h.value("elemta_delivery_seconds_bucket", le="0.0025") == 0
    assert h.value("elemta_delivery_seconds_bucket", le="0.005") == 1


def test_a_message_over_the_size_limit_counts_refused_too_big() -> None:
    """A message refused in DATA for its size, and one refused at MAIL for SIZE=, are refused too_big."""
    h = Counted()
    protocol, transport = h.connect()
    protocol.dataReceived(ENVELOPE + b"x" * 6000 + b"\r\n.\r\n")
    assert b"552" in take(transport)
    protocol.dataReceived(b"MAIL FROM:<alice@example.net> SIZE=999999\r\n")
    assert b"552" in take(transport)
    assert h.value("elemta_messages_total", result="refused") == 2
    assert h.value("elemta_messages_refused_total", reason="too_big") == 2
    assert h.value("elemta_messages_total", result="accepted") == 0


def test_a_store_failure_counts_deferred_by_errno() -> None:
    """A transient store failure (451) is a deferred message labelled with the errno."""
    h = Counted(auto_commit=False)
    protocol, transport = h.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    committed: Deferred[None] | None = h.sink.writers[0].committed
    assert committed is not None
    committed.errback(DeliveryFailed("mailbox storage failed (ENOSPC (No space left on device))"))
    assert b"451" in take(transport)
    assert h.value("elemta_messages_total", result="deferred") == 1
    assert h.value("elemta_messages_deferred_total", reason="enospc") == 1


def test_connections_refused_at_the_cap_and_when_stopping_are_counted_apart() -> None:
    """A 421 at max_connections counts as cap; a 421 while shutting down as shutdown."""
    h = Counted(max_connections=1)
    _first, _ = h.connect()
    _, refused = h.connect()
    assert b"421" in refused.value()
    assert h.value("elemta_connections_refused_total", reason="cap") == 1
    h.server.shutdown(10)
    _, late = h.connect()
    assert b"421" in late.value()
    assert h.value("elemta_connections_refused_total", reason="shutdown") == 1
    assert h.value("elemta_connections_accepted_total", listener="smtp") == 1


def test_a_connection_ended_by_quit_counts_closed_quit() -> None:
    """The per-connection close line is counted by how the connection ended."""
    h = Counted()
    protocol, _transport = h.connect()
    protocol.dataReceived(b"QUIT\r\n")
    protocol.connectionLost()
    assert h.value("elemta_connections_closed_total", reason="quit") == 1
    assert h.value("elemta_connections_open") == 0


def test_without_metrics_the_adapter_counts_nothing() -> None:
    """With [metrics] off the listener has no counts and a message still goes through."""
    h = Harness()
    assert h.server.counts is None
    protocol, transport = h.connect()
    protocol.dataReceived(ENVELOPE + BODY + b".\r\n")
    assert b"250 2.0.0" in take(transport)


def test_tls_handshakes_are_counted_by_version() -> None:
    """Each completed handshake counts under its protocol version (a label made once)."""
    m = Metrics()
    counts = counting.SMTPCounts(m)
    counts.handshake_done("TLSv1.3")
    counts.handshake_done("TLSv1.3")
    counts.handshake_done(None)
    assert value(m, "elemta_tls_handshakes_total", version="TLSv1.3") == 2
    assert value(m, "elemta_tls_handshakes_total", version="unknown") == 1


def test_a_failed_handshake_line_counts_by_listener() -> None:
    """The session's handshake-failed line counts under smtps or starttls."""
    m = Metrics()
    counts = counting.SMTPCounts(m)
    counts.logged(loglines.handshake_failed("192.0.2.1", "no shared cipher"), implicit_tls=True)
    counts.logged(loglines.handshake_failed("192.0.2.1", "closed"), implicit_tls=False)
    counts.logged(loglines.closing_idle("192.0.2.1"), implicit_tls=False)  # not counted
    assert value(m, "elemta_tls_handshake_failures_total", listener="smtps") == 1
    assert value(m, "elemta_tls_handshake_failures_total", listener="starttls") == 1


# --- certificates: reloads and rejected files through the real ServerTLS ---

#: What each bad file of test_tls_context.BAD_KINDS is counted as.
REJECTED_AS = {"garbage": "malformed", "truncated": "truncated", "mismatched-key": "key_mismatch",
               "expired": "expired", "not-yet-valid": "not_yet_valid", "wrong-name": "wrong_name",
               "chain-out-of-order": "key_mismatch",  # its key is checked against the first certificate first
               "empty": "malformed"}


@pytest.mark.parametrize("kind", list(BAD_KINDS), ids=list(BAD_KINDS))
def test_a_rejected_file_counts_under_its_reason(tmp_path: Path, ca: CA, kind: str) -> None:
    """A bad live file at reload counts one rejection with a fixed reason word, and the reload."""
    h = TLSHarness(tmp_path, ca)
    metrics = Metrics()
    tls = ServerTLS(h.cfg, lambda: h.now, metrics=metrics)
    h.install(h.leaf())
    tls.reload()
    BAD_KINDS[kind](h, layout.certificate_path(h.cache, DOMAIN))
    tls.reload()
    assert value(metrics, "elemta_certificate_reloads_total") == 2
    assert value(metrics, "elemta_certificate_rejected_total", reason=REJECTED_AS[kind]) == 1


def test_a_file_with_the_wrong_issuer_counts_as_chain(tmp_path: Path, ca: CA) -> None:
    """A leaf followed by a CA that did not issue it is rejected as chain."""
    h = TLSHarness(tmp_path, ca)
    metrics = Metrics()
    tls = ServerTLS(h.cfg, lambda: h.now, metrics=metrics)
    leaf = h.leaf()
    layout.ensure_layout(h.cache)
    layout.certificate_path(h.cache, DOMAIN).write_bytes(
        leaf.key_pem + leaf.cert_pem + make_ca("Other CA").pem)
    tls.reload()
    assert value(metrics, "elemta_certificate_rejected_total", reason="chain") == 1


def test_served_certificates_say_their_source_and_key_type(tmp_path: Path, ca: CA) -> None:
    """served() names where each certificate came from and its key type (metric labels)."""
    h = TLSHarness(tmp_path, ca)
    h.install(h.leaf())
    h.tls.reload()
    [served] = h.tls.served()
    assert (served.kind, served.key_type) == ("live", "ecdsa-p256")


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca(not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650))


# --- HTTP-01 ---

def test_a_served_http01_answer_is_counted(tmp_path: Path) -> None:
    """Each HTTP-01 answer the site serves counts once; a 404 does not."""
    from elemta_smtp.acme.http01 import http01_site

    challenge_dir = tmp_path.joinpath(".well-known", "acme-challenge")
    challenge_dir.mkdir(parents=True)
    (challenge_dir / "tok").write_text("tok.key")
    metrics = Metrics()
    site = http01_site(tmp_path, metrics=metrics)
    request = b"GET /.well-known/acme-challenge/%s HTTP/1.1\r\nHost: a\r\n\r\n"
    assert site_request(site, request % b"tok")[0] == 200
    assert site_request(site, request % b"nothing")[0] == 404
    assert value(metrics, "elemta_acme_challenges_served_total", type="http-01") == 1


# --- reasons -> label words ---

@pytest.mark.parametrize(("reason", "word"), [
    ("message too big", "too_big"), ("NUL byte in message", "nul_byte"),
    ("bare LF or CR in message", "bare_newline"), ("line too long", "line_too_long"),
    ("idle timeout", "idle_timeout"), ("connection lost", "connection_lost"),
    ("something new", "other"),
])
def test_refusal_reasons_become_one_word(reason: str, word: str) -> None:
    """The session's refusal reasons map onto fixed label values."""
    assert refusal_reason(reason) == word


def test_store_reasons_become_one_word() -> None:
    """Deferred: the errno name or internal_error; failed: bad_recipient or delivery_failed."""
    assert deferral_reason("deferred (451): mailbox storage failed (EACCES (Permission "
                           "denied))") == "eacces"
    assert deferral_reason("deferred (451): mailbox storage failed (internal error)") == \
        "internal_error"
    assert deferral_reason("deferred (451): who knows") == "other"
    assert failure_reason("failed (554): cannot deliver to 'x': not an address") == \
        "bad_recipient"
    assert failure_reason("failed (554): a message needs at least one recipient") == \
        "delivery_failed"


def test_close_reasons_become_one_word() -> None:
    """Every close reason the session gives has its own word; an unknown one is other."""
    for reason in ("quit", "client closed", "idle timeout", "too many errors", "shutdown",
                   "non-SMTP command", "TLS handshake on the plain port"):
        assert close_reason(reason) != "other", reason
    assert close_reason("new reason") == "other"


def test_rejection_reason_of_an_unknown_text_is_other() -> None:
    """A reason nobody classified yet is other, never free text."""
    assert rejection_reason("something nobody wrote yet") == "other"
    assert rejection_reason("OpenSSL refused it: bad") == "openssl"


def test_the_lock_free_families_render_like_prometheus_client_ones() -> None:
    """A Tally is a counter named <name>_total; a TallyHistogram has cumulative buckets up to
    +Inf, _sum and _count, as the text format parser reads them."""
    registry = CollectorRegistry()
    tally = Tally("elemta_test", "doc", ["result"], registry)
    tally.labels("a").inc()
    tally.labels("a").inc(2)
    histogram = TallyHistogram("elemta_test_seconds", "doc", (0.1, 1.0), registry)
    for seconds in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(seconds)
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    assert families["elemta_test"].type == "counter"
    assert [(s.name, s.labels, s.value) for s in families["elemta_test"].samples] == \
        [("elemta_test_total", {"result": "a"}, 3.0)]
    samples = {(s.name, s.labels.get("le")): s.value for s in families["elemta_test_seconds"].samples}
    assert samples == {("elemta_test_seconds_bucket", "0.1"): 2, ("elemta_test_seconds_bucket", "1.0"): 3,
                       ("elemta_test_seconds_bucket", "+Inf"): 4, ("elemta_test_seconds_count", None): 4,
                       ("elemta_test_seconds_sum", None): 7.65}
    with pytest.raises(ValueError, match="expected labels"):
        tally.labels("a", "b")
