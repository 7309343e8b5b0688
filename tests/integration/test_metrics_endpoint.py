"""The [metrics] listener of a real daemon: real scrapes over HTTP, parsed with
prometheus-client's parser, before and after a delivered message, a refused message, an
SMTPS handshake, a rejected certificate file and a SIGHUP reload; /healthz; the HTTP-01
request rules; and no mail address anywhere on the endpoint."""

from __future__ import annotations

import json
import smtplib
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from elemta_smtp.cache import layout, live
from elemta_smtp.cache.challenges import MAX_CONNECTIONS, write_answer
from tests.certs import CA, make_ca, make_leaf, utcnow
from tests.integration.test_hostile_http import connect, keep_alive_404, read_all
from tests.support import (
    Daemon,
    Setup,
    client_context,
    free_port,
    http_get,
    running_daemon,
    wait_until,
)

DOMAIN = "mail.example.com"
SENDER, RECIPIENT = "alice.sender@example.net", "bob.rcpt@example.com"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[Samples, str]:
    """GET /metrics; every sample by (name, labels), and the raw text."""
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return samples, text


def get(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, metric: str, **labels: str) -> float:
    return get(after, metric, **labels) - get(before, metric, **labels)


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca()


@pytest.fixture
def daemon(tmp_path: Path, ca: CA) -> Iterator[tuple[Daemon, int]]:
    """A daemon serving a live certificate for the domain, with [metrics] on."""
    setup = Setup(root=tmp_path)
    port = free_port()
    setup.write({"metrics": {"listen_addr": f"127.0.0.1:{port}"},
                 "server": {"max_message_size": "8KB"}})
    leaf = make_leaf(ca, [DOMAIN])
    live.write_certificate(setup.cache_dir, DOMAIN, leaf.key_pem, leaf.fullchain_pem)
    with running_daemon(setup) as running:
        yield running, port


def send(port: int, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(SENDER, [RECIPIENT], body)


def test_a_scrape_follows_messages_handshakes_and_reloads(daemon: tuple[Daemon, int],
                                                          ca: CA) -> None:
    """Each event moves exactly its metrics: a delivered and a refused message, an SMTPS
    handshake, a rejected certificate file and a good SIGHUP reload."""
    running, port = daemon
    setup = running.setup
    start, _ = scrape(port)
    assert get(start, "elemta_certificate_reloads_total") == 1
    assert get(start, "elemta_healthy") == 1

    send(setup.smtp_port, b"Subject: counted\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=10) as client:  # no SIZE=: refused in DATA
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        assert client.data(b"Subject: too big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 200)[0] == 552
    with smtplib.SMTP_SSL("127.0.0.1", setup.smtps_port, timeout=10,
                          context=client_context()) as client:
        client.noop()
    after_mail, _ = scrape(port)
    assert delta(start, after_mail, "elemta_messages_total", result="accepted") == 1
    assert delta(start, after_mail, "elemta_messages_total", result="refused") == 1
    assert delta(start, after_mail, "elemta_messages_total", result="deferred") == 0
    assert delta(start, after_mail, "elemta_messages_refused_total", reason="too_big") == 1
    assert delta(start, after_mail, "elemta_delivery_seconds_count") == 1
    assert delta(start, after_mail, "elemta_connections_accepted_total", listener="smtp") == 2
    assert delta(start, after_mail, "elemta_connections_accepted_total", listener="smtps") == 1
    assert delta(start, after_mail, "elemta_tls_handshakes_total", version="TLSv1.3") == 1

    bad = layout.certificate_path(setup.cache_dir, "other.example.com")
    bad.write_bytes(b"not a certificate\n")
    running.sighup()
    running.wait_for_log(f"TLS certificate {bad} rejected")
    after_bad, _ = scrape(port)
    assert delta(after_mail, after_bad, "elemta_certificate_reloads_total") == 1
    assert delta(after_mail, after_bad, "elemta_certificate_rejected_total", reason="malformed") == 1
    bad.unlink()

    renewed = make_leaf(ca, [DOMAIN], not_after=utcnow() + timedelta(days=50))
    live.write_certificate(setup.cache_dir, DOMAIN, renewed.key_pem, renewed.fullchain_pem)
    running.sighup()
    running.wait_for_log(f"serial {format(renewed.cert.serial_number, 'x')}")
    after_reload, _ = scrape(port)
    assert delta(after_bad, after_reload, "elemta_certificate_reloads_total") == 1
    assert delta(after_bad, after_reload, "elemta_certificate_rejected_total", reason="malformed") == 0
    labels = {"name": DOMAIN, "source": "live", "key_type": "ecdsa-p256"}
    assert get(after_reload, "elemta_certificate_not_after_seconds", **labels) == \
        renewed.cert.not_valid_after_utc.timestamp()
    assert 49 < get(after_reload, "elemta_certificate_days_left", **labels) <= 50


def test_health_and_the_request_rules(daemon: tuple[Daemon, int]) -> None:
    """/healthz is 200 JSON naming the certificate; other paths 404, other methods 405, an
    HTTP/1.1 request without Host 400; nothing on the endpoint shows a mail address."""
    running, port = daemon
    send(running.setup.smtp_port, b"Subject: hi\r\n\r\nhello\r\n")
    status, content_type, body = http_get(port, "/healthz")
    health = json.loads(body)
    assert (status, content_type, health["status"]) == (200, "application/json", "ok")
    assert health["certificate"]["names"] == [DOMAIN]
    assert {item["name"] for item in health["listeners"]} == {"smtp", "smtps", "http-01", "metrics"}
    assert http_get(port, "/")[0] == 404
    assert http_get(port, "/metrics", method="POST")[0] == 405
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    _, text = scrape(port)
    for address in (SENDER, RECIPIENT, "alice", "bob"):
        assert address not in text and address not in body.decode()


def answers_200(port: int) -> bool:
    """GET /healthz answers 200 (False while the listener still closes new connections)."""
    try:
        return http_get(port, "/healthz")[0] == 200
    except ConnectionError:
        return False


def test_each_http_listener_has_its_own_connection_budget(daemon: tuple[Daemon, int]) -> None:
    """With the HTTP-01 listener holding all its 64 connections, /metrics still answers; with
    the metrics listener holding its 64, one more is closed unanswered (logged once) and
    /healthz answers again once one of them closes."""
    running, port = daemon
    flood = [connect(running.setup.http_port) for _ in range(MAX_CONNECTIONS)]
    held: list[socket.socket] = []
    try:
        assert all(keep_alive_404(sock) for sock in flood)
        assert http_get(port, "/healthz")[0] == 200
        for _ in range(MAX_CONNECTIONS):
            held.append(connect(port))
            held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: mx\r\n\r\n")
            assert held[-1].recv(12) == b"HTTP/1.1 200"
        with connect(port) as refused:
            refused.sendall(b"GET /metrics HTTP/1.1\r\nHost: mx\r\n\r\n")
            assert read_all(refused) == b""  # closed unanswered (a reset counts)
        running.wait_for_log("metrics listener full")
        held.pop().close()
        wait_until(lambda: answers_200(port), "/healthz served again", timeout=3, daemon=running)
    finally:
        for sock in flood + held:
            sock.close()


def test_http01_answers_served_are_counted(daemon: tuple[Daemon, int]) -> None:
    """An answer fetched from the daemon's HTTP-01 port adds one to
    elemta_acme_challenges_served{type="http-01"}; a token with no answer adds nothing."""
    running, port = daemon
    token = "a" * 43
    write_answer(layout.challenge_dir(running.setup.cache_dir), token, token + ".thumbprint")
    before, _ = scrape(port)
    assert http_get(running.setup.http_port, f"/.well-known/acme-challenge/{token}")[0] == 200
    assert http_get(running.setup.http_port, "/.well-known/acme-challenge/" + "b" * 43)[0] == 404
    after, _ = scrape(port)
    assert delta(before, after, "elemta_acme_challenges_served_total", type="http-01") == 1
