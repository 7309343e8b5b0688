"""The monitoring listener's decisions: the health verdict, what each request gets, the
scrape-time certificate gauges, and that the alert rules name metrics that exist."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from elemta_smtp.acme.http01 import ChallengeSite
from elemta_smtp.cache.challenges import MAX_CONNECTIONS, REQUEST_DEADLINE, Answer
from elemta_smtp.metrics import Metrics
from elemta_smtp.monitor.collector import StateCollector, certificate_families
from elemta_smtp.monitor.health import Health, ListenerState, check_health
from elemta_smtp.monitor.site import METRICS_TYPE, answer, monitor_site
from elemta_smtp.tls.context import ServedCertificate
from tests.fakes import site_request

NOW = datetime(2030, 6, 1, tzinfo=timezone.utc)
DOMAIN = "mail.example.com"
UP = [ListenerState("smtp", "127.0.0.1:25", True), ListenerState("metrics", "127.0.0.1:9465", True)]
RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "elemta.rules.yml"


def served(names: tuple[str, ...] = (DOMAIN,), days_left: float = 60, kind: str = "live",
           started: float = 30) -> ServedCertificate:
    return ServedCertificate(names=names, serial=0x0A, not_before=NOW - timedelta(days=started),
                             not_after=NOW + timedelta(days=days_left), source=Path("x.pem"),
                             is_bootstrap=kind == "bootstrap", is_default=True, kind=kind,
                             key_type="ecdsa-p256")


# --- health ---

def test_healthy_with_a_valid_certificate_and_every_listener_up() -> None:
    """200: listeners up, a valid certificate for the domain; the body names it."""
    health = check_health(UP, [served()], DOMAIN, NOW)
    assert (health.ok, health.status) == (True, 200)
    assert health.body["status"] == "ok"
    certificate = health.body["certificate"]
    assert isinstance(certificate, dict)
    assert certificate["days_left"] == 60 and certificate["source"] == "live"


@pytest.mark.parametrize(("certs", "reason"), [
    ([served(kind="bootstrap")], "self-signed bootstrap"),
    ([served(days_left=-1)], "expired"),
    ([served(started=-1)], "not valid before"),
    ([served(names=("other.example.com",))], "no certificate for mail.example.com is served "
                                             "(serving other.example.com)"),
    ([], "no certificate is served"),
], ids=["bootstrap", "expired", "not-yet-valid", "other-name", "none"])
def test_unhealthy_without_a_valid_certificate_for_the_domain(
        certs: list[ServedCertificate], reason: str) -> None:
    """503 with the reason when no valid, non-bootstrap certificate covers the domain."""
    health = check_health(UP, certs, DOMAIN, NOW)
    assert (health.ok, health.status) == (False, 503)
    assert reason in health.reason
    assert health.body["reason"] == health.reason and health.body["status"] == "unhealthy"


def test_a_wildcard_certificate_covers_the_domain() -> None:
    """*.example.com covers mail.example.com."""
    assert check_health(UP, [served(names=("*.example.com",))], DOMAIN, NOW).ok


def test_a_listener_down_or_stopping_is_unhealthy() -> None:
    """A listener that no longer listens, or a daemon that is stopping, is 503."""
    down = [UP[0]._replace(up=False), UP[1]]
    assert check_health(down, [served()], DOMAIN, NOW).reason == "not listening: smtp (127.0.0.1:25)"
    assert check_health(UP, [served()], DOMAIN, NOW, stopping=True).reason == \
        "the daemon is stopping"


def test_without_tls_no_certificate_is_needed() -> None:
    """With TLS off (no domain to serve) the listeners alone decide; none bound yet is 503."""
    assert check_health(UP, [], None, NOW).ok
    assert check_health([], [], None, NOW).reason == "not listening yet"


# --- requests ---

def _answer(method: str, target: str, version: str = "HTTP/1.1",
            hosts: tuple[str, ...] = ("mx",), ok: bool = True) -> Answer:
    return answer(method, target, version, hosts, metrics=lambda: b"elemta_x 1.0\n",
                  health=lambda: Health(ok, "ok" if ok else "why", {"status": "x"}))


def test_each_path_gets_its_answer() -> None:
    """/metrics: the text format; /healthz: JSON 200 or 503; elsewhere 404; never cached."""
    metrics = _answer("GET", "/metrics?x=1")
    assert (metrics.status, metrics.body) == (200, b"elemta_x 1.0\n")
    assert ("Content-Type", METRICS_TYPE) in metrics.headers
    health = _answer("GET", "/healthz", ok=False)
    assert health.status == 503 and json.loads(health.body) == {"status": "x"}
    assert ("Content-Type", "application/json") in health.headers
    assert _answer("GET", "/").status == 404
    assert all(("Cache-Control", "no-store") in a.headers for a in (metrics, health))


def test_the_http01_request_rules_apply() -> None:
    """No Host on HTTP/1.1: 400 and close; POST: 405; HEAD: headers without the body."""
    bad = _answer("GET", "/metrics", hosts=())
    assert (bad.status, bad.close) == (400, True)
    assert _answer("POST", "/metrics").status == 405
    head = _answer("HEAD", "/metrics")
    assert head.status == 200 and head.body == b"" and ("Content-Length", "13") in head.headers


def test_the_site_serves_a_registry_in_the_text_format() -> None:
    """The Twisted site renders the registry; the answer parses as Prometheus text."""
    metrics = Metrics()
    metrics.messages.labels("accepted").inc(3)
    site = monitor_site(metrics.registry, lambda: Health(True, "ok", {"status": "ok"}))
    status, headers, body = site_request(site, b"GET /metrics HTTP/1.1\r\nHost: mx\r\n\r\n")
    assert status == 200 and headers[b"content-type"] == METRICS_TYPE.encode()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    [sample] = [s for s in families["elemta_messages"].samples
                if s.labels == {"result": "accepted"}]
    assert sample.value == 3
    status, _, body = site_request(site, b"GET /healthz HTTP/1.1\r\nHost: mx\r\n\r\n")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


# --- scrape-time gauges ---

def test_certificate_gauges_have_one_series_per_name() -> None:
    """not-after (Unix time) and days left per DNS name, labelled with source and key type."""
    not_after, days_left = certificate_families(
        [served(names=(DOMAIN, "mx.example.com"), days_left=10),
         served(names=(DOMAIN,), days_left=5, kind="hand")], NOW)
    series = {(s.labels["name"], s.labels["source"]): s.value for s in days_left.samples}
    assert series == {(DOMAIN, "live"): 10, ("mx.example.com", "live"): 10,
                      (DOMAIN, "cert_file"): 5}
    assert {s.labels["key_type"] for s in not_after.samples} == {"ecdsa-p256"}
    assert [s.value for s in not_after.samples if s.labels["source"] == "cert_file"] == \
        [(NOW + timedelta(days=5)).timestamp()]


def test_the_collector_adds_listeners_and_health() -> None:
    """A scrape holds the certificate gauges, each listener's up and the health as 0/1."""
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: [served(kind="bootstrap")], lambda: UP,
                                     lambda: check_health(UP, [served(kind="bootstrap")], DOMAIN, NOW),
                                     lambda: NOW))
    text = generate_latest(registry).decode()
    assert 'elemta_listener_up{address="127.0.0.1:25",listener="smtp"} 1.0' in text
    assert "elemta_healthy 0.0" in text
    assert 'source="bootstrap"' in text


@pytest.mark.parametrize(("state", "line"), [(True, "elemta_cluster_redis_up 1.0"),
                                             (False, "elemta_cluster_redis_up 0.0"),
                                             (None, None)])
def test_the_collector_says_whether_the_clusters_redis_answers(state: bool | None,
                                                                line: str | None) -> None:
    """In a cluster a scrape says whether Redis answers (1/0), nothing before its first
    answer; a single host has no such series."""
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: [served()], lambda: UP,
                                     lambda: check_health(UP, [served()], DOMAIN, NOW),
                                     lambda: NOW, redis_up=lambda: state))
    text = generate_latest(registry).decode()
    if line is None:
        assert "elemta_cluster_redis_up " not in text
    else:
        assert line in text
    alone = CollectorRegistry()
    alone.register(StateCollector(lambda: [served()], lambda: UP,
                                  lambda: check_health(UP, [served()], DOMAIN, NOW), lambda: NOW))
    assert "elemta_cluster_redis_up" not in generate_latest(alone).decode()


def everything_exported() -> Metrics:
    """The daemon's families with the scrape-time gauges of a cluster node registered."""
    metrics = Metrics()
    metrics.registry.register(StateCollector(
        lambda: [served()], lambda: UP, lambda: check_health(UP, [served()], DOMAIN, NOW),
        lambda: NOW, redis_up=lambda: True))
    return metrics


def test_the_alert_rules_name_only_metrics_that_exist() -> None:
    """Every elemta_* name in the alert rules is exported (a typo would never fire)."""
    metrics = everything_exported()
    registry = metrics.registry
    metrics.renewal_failing_since.labels(DOMAIN).set(0)
    exported = {s.name for family in registry.collect() for s in family.samples}
    used = set(re.findall(r"\belemta_[a-z_]+", RULES.read_text()))
    assert used, "no elemta metric found in the rules"
    assert used <= exported, used - exported


def test_the_site_keeps_the_http01_limits() -> None:
    """The metrics site is the HTTP-01 listener's bounded site: same deadline, same cap,
    and a connection over the cap is closed unread."""
    site = monitor_site(Metrics().registry, lambda: Health(True, "ok"))
    assert isinstance(site, ChallengeSite)
    assert (site.deadline, site.max_connections()) == (REQUEST_DEADLINE, MAX_CONNECTIONS)
    full = monitor_site(Metrics().registry, lambda: Health(True, "ok"), max_connections=lambda: 0)
    assert full.buildProtocol(None) is None


def test_the_readme_documents_every_metric_and_label() -> None:
    """Every exported metric name and label name is in README.rst's Metrics tables."""
    metrics = everything_exported()
    registry = metrics.registry
    readme = (RULES.parents[2] / "README.rst").read_text()
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        assert f"``{name}``" in readme, name
    labels = {label for family in registry.collect() for s in family.samples for label in s.labels}
    labels |= {"name", "reason", "kind", "type", "result", "listener", "version"}
    for label in labels - {"le"}:
        assert f"``{label}``" in readme, label


def test_an_expired_certificate_of_one_key_type_is_unhealthy() -> None:
    """key_type = "ecdsa+rsa": a valid RSA certificate does not make up for an expired ECDSA
    one (most clients get the ECDSA one): 503 naming it; both valid: 200; an RSA one not
    served at all (a DANE rollover will bring it) is no problem."""
    ecdsa = replace(served(days_left=-1), key_kind="ecdsa")
    rsa = replace(served(days_left=80), key_kind="rsa", key_type="rsa-2048", variant="rsa")
    verdict = check_health(UP, [ecdsa, rsa], DOMAIN, NOW)
    assert verdict.status == 503
    assert verdict.reason.startswith(f"the ECDSA certificate for {DOMAIN} expired at")
    fresh = replace(ecdsa, not_after=NOW + timedelta(days=10))
    assert check_health(UP, [fresh, rsa], DOMAIN, NOW).status == 200
    assert check_health(UP, [fresh], DOMAIN, NOW).status == 200


def test_the_absolute_form_is_read_like_the_origin_form() -> None:
    """GET http://mx:9465/metrics (RFC 9112 absolute form, as proxies send it) is /metrics;
    http://mx:9465 alone is / (404); a query string is ignored there too."""
    assert _answer("GET", "http://mx:9465/metrics").status == 200
    assert _answer("GET", "HTTP://mx:9465/healthz?verbose=1").status == 200
    assert _answer("GET", "http://mx:9465").status == 404
