"""What the certificate manager and its notifier count: acquisitions, renewals (attempts,
failures, last success, since when failing) and notices by kind, driven by a task.Clock
with the scripted certbot and mailer of test_manager.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.slots import slots
from elemta_smtp.config import parse_config
from elemta_smtp.metrics import Metrics
from tests.unit.test_manager import DOMAIN, T0, World, cert, make_config, result


@dataclass
class CountingWorld(World):
    """test_manager's World, its manager counting into ``metrics``."""

    metrics: Metrics = field(default_factory=Metrics)

    def new_manager(self) -> CertManager:
        return CertManager(self.config, self.served, self.clock, self.runner, self.mailer,
                           reload=self.reload, python="py", metrics=self.metrics)

    def value(self, metric: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(metric, labels) or 0.0

    def by_name(self, metric: str) -> float:
        return self.value(metric, name=DOMAIN)


@pytest.fixture
def world(tmp_path: Path) -> CountingWorld:
    return CountingWorld(tmp_path)


def test_every_series_exists_before_anything_happened(world: CountingWorld) -> None:
    """Attempts and failures exist at 0 from the start; renewal is "not failing" (0)."""
    samples = {s.name for family in world.metrics.registry.collect() for s in family.samples
               if s.labels.get("name") == DOMAIN}
    assert {"elemta_certificate_acquisition_attempts_total",
            "elemta_certificate_renewal_failures_total",
            "elemta_certificate_renewal_failing_since_timestamp_seconds"} <= samples
    assert world.by_name("elemta_certificate_renewal_failing_since_timestamp_seconds") == 0


def test_acquisition_attempts_and_failures_are_counted(world: CountingWorld) -> None:
    """Two failed certonly runs then a good one: three attempts, two failures."""
    world.manager.startService()
    world.clock.advance(0)
    world.runner.finish(result(False, "DNS problem: NXDOMAIN"))
    world.clock.advance(120)
    world.runner.finish(result(False, "DNS problem: NXDOMAIN"))
    world.clock.advance(240)
    world.runner.finish(result(), cert("0a", world.now()))
    assert world.by_name("elemta_certificate_acquisition_attempts_total") == 3
    assert world.by_name("elemta_certificate_acquisition_failures_total") == 2
    assert world.value("elemta_notices_sent_total", kind="issued") == 1
    assert world.value("elemta_notices_sent_total", kind="acquire-failed") == 1


def test_failing_renewal_marks_since_when_and_success_clears_it(world: CountingWorld) -> None:
    """The first failed renewal sets failing-since to its time, the next keeps it; a renewal
    that works sets the last success time and failing-since back to 0."""
    world.cert = cert("0a", T0)
    world.auto = (result(False, "urn:ietf:params:acme:error:connection"), None)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=60, hours=1))
    first = world.by_name("elemta_certificate_renewal_failing_since_timestamp_seconds")
    assert first == pytest.approx((T0 + timedelta(days=60)).timestamp(), abs=3600)
    world.advance_to(T0 + timedelta(days=60, hours=13))
    assert world.by_name("elemta_certificate_renewal_attempts_total") == 2
    assert world.by_name("elemta_certificate_renewal_failures_total") == 2
    assert world.by_name("elemta_certificate_renewal_failing_since_timestamp_seconds") == first
    assert world.value("elemta_notices_sent_total", kind="renewal-failed") == 2
    world.auto = None
    world.advance_to(T0 + timedelta(days=61, hours=1, minutes=1))
    world.runner.finish(result(), cert("0b", world.now()))
    assert world.by_name("elemta_certificate_renewal_attempts_total") == 3
    assert world.by_name("elemta_certificate_renewal_failures_total") == 2
    assert world.by_name("elemta_certificate_renewal_failing_since_timestamp_seconds") == 0
    assert world.by_name("elemta_certificate_renewal_last_success_timestamp_seconds") == \
        world.clock.seconds()


def test_a_notice_that_cannot_be_mailed_counts_failed(world: CountingWorld) -> None:
    """A failed mail counts under notices failed with its kind; the retry that works, sent."""
    world.config = make_config(world.tmp_path, "auto_renew = false\n")
    world.manager = world.new_manager()
    world.cert = cert("0a", T0)
    world.mailer.failing = True
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=60, hours=1))
    assert world.value("elemta_notices_failed_total", kind="expiry") == 1
    assert world.value("elemta_notices_sent_total", kind="expiry") == 0
    world.mailer.failing = False
    world.advance_to(T0 + timedelta(days=60, hours=13))
    assert world.value("elemta_notices_sent_total", kind="expiry") == 1


def test_the_rsa_certificate_of_ecdsa_rsa_counts_under_its_lineage_name(tmp_path: Path) -> None:
    """With key_type = "ecdsa+rsa" the RSA certificate's manager counts under name
    "<domain>-rsa" (its certbot lineage), so the ECDSA one's series stay its own."""
    world = CountingWorld(tmp_path)
    text = (f'[server]\nhostname = "{DOMAIN}"\n[tls.letsencrypt]\nenabled = true\n'
            'email = "admin@example.com"\ncache_dir = "cache"\nkey_type = "ecdsa+rsa"\n')
    (tmp_path / "elemta.toml").write_text(text)
    world.config = parse_config(text, str(tmp_path / "elemta.toml"), tmp_path)
    rsa = slots(world.config)[1]
    manager = CertManager(world.config, world.served, world.clock, world.runner, world.mailer,
                          reload=world.reload, python="py", metrics=world.metrics, slot=rsa)
    manager.startService()
    world.clock.advance(0)
    world.runner.finish(result(False, "DNS problem: NXDOMAIN"))
    rsa_name = f"{DOMAIN}-rsa"
    assert world.value("elemta_certificate_acquisition_attempts_total", name=rsa_name) == 1
    assert world.value("elemta_certificate_acquisition_failures_total", name=rsa_name) == 1
    assert world.by_name("elemta_certificate_acquisition_attempts_total") == 0
