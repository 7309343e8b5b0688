"""The certificate manager driven by a task.Clock, with a scripted certbot runner
and a recording mailer: acquisition with backoff, renewal before notices,
failure mails, restarts, SIGHUP after a timer renewal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogEvent, capturedLogs, formatEvent

from elemta_smtp.acme.mailer import NotifyError
from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.notices import Notice
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.runner import RunResult
from elemta_smtp.acme.wiring import facts_from_served
from elemta_smtp.cache import lineages
from elemta_smtp.cache.store import Lease
from elemta_smtp.cluster.issuance import Permit
from elemta_smtp.config import Config, parse_config
from elemta_smtp.tls.context import ServedCertificate

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DOMAIN = "mail.example.com"
HOUR = 3600.0
DAY = 86400.0


def make_config(tmp_path: Path, renewal: str = "") -> Config:
    path = tmp_path / "elemta.toml"
    text = (f'[server]\nhostname = "{DOMAIN}"\n'
            f'[tls.letsencrypt]\nenabled = true\nemail = "admin@example.com"\n'
            f'cache_dir = "cache"\n[tls.renewal]\ncheck_interval = "12h"\n{renewal}')
    path.write_text(text)
    (tmp_path / "cache").mkdir(exist_ok=True)
    return parse_config(text, str(path), tmp_path)


def cert(serial: str, start: datetime, days: float = 90) -> CertFacts:
    return CertFacts(serial=serial, not_before=start, not_after=start + timedelta(days=days),
                     names=(DOMAIN,))


def result(ok: bool = True, reason: str = "") -> RunResult:
    return RunResult(("certbot",), 0 if ok else 1, None, False, (),
                     () if ok else (reason,), 1.0)


@dataclass
class FakeRunner:
    """Records each certbot command; the test answers with ``finish`` (or at once via ``auto``)."""

    world: World
    calls: list[list[str]] = field(default_factory=list)
    pending: list[Deferred[RunResult]] = field(default_factory=list)

    def run(self, argv: Sequence[str], timeout: float) -> Deferred[RunResult]:
        self.calls.append(list(argv))
        d: Deferred[RunResult] = Deferred()
        self.pending.append(d)
        if self.world.auto is not None:
            self.finish(*self.world.auto)
        return d

    def finish(self, outcome: RunResult, new_cert: CertFacts | None = None) -> None:
        if new_cert is not None:
            self.world.cert = new_cert
        self.pending.pop(0).callback(outcome)

    @property
    def verbs(self) -> list[str]:
        return [next(a for a in c if a in ("certonly", "renew")) for c in self.calls]


@dataclass
class FakeMailer:
    recipients: tuple[str, ...] = ("admin@example.com",)
    sent: list[Notice] = field(default_factory=list)
    failing: bool = False

    def send(self, notice: Notice, now: datetime) -> Deferred[None]:
        if self.failing:
            return fail(NotifyError("relay said 421 try later"))
        self.sent.append(notice)
        return succeed(None)

    @property
    def kinds(self) -> list[str]:
        return [n.kind for n in self.sent]


@dataclass
class World:
    """The served certificate, a clock at T0, and the manager's collaborators."""

    tmp_path: Path
    renewal: str = ""
    cert: CertFacts | None = None
    auto: tuple[RunResult, CertFacts | None] | None = None
    reloads: int = 0

    def __post_init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0.timestamp())
        self.runner = FakeRunner(self)
        self.mailer = FakeMailer()
        self.config = make_config(self.tmp_path, self.renewal)
        self.manager = self.new_manager()

    def served(self) -> CertFacts | None:
        return self.cert

    def reload(self) -> None:
        self.reloads += 1

    def new_manager(self) -> CertManager:
        return CertManager(self.config, self.served, self.clock, self.runner, self.mailer,
                           reload=self.reload, python="py")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def advance_to(self, moment: datetime) -> None:
        """Move the clock to ``moment`` in steps, firing every check on the way."""
        while self.now() < moment:
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            step = min([*calls, moment.timestamp()]) - self.clock.seconds()
            self.clock.advance(max(step, 0.001))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def messages(logs: Sequence[LogEvent]) -> str:
    return "\n".join(formatEvent(e) for e in logs)


def test_empty_cache_obtains_at_start(world: World) -> None:
    """With no certificate the first check runs certbot certonly at once; success is mailed."""
    world.manager.startService()
    world.clock.advance(0)
    assert world.runner.verbs == ["certonly"]
    assert "--force-renewal" not in world.runner.calls[0]
    world.runner.finish(result(), cert("0a", world.now()))
    assert world.reloads == 1
    assert world.mailer.kinds == ["issued"]
    [next_check] = world.clock.getDelayedCalls()
    assert next_check.getTime() - world.clock.seconds() == 12 * HOUR


def test_acquisition_failure_backs_off(world: World) -> None:
    """Failures are logged with certbot's reason and retried after 2m, 4m, 8m... never a tight loop."""
    world.auto = (result(False, "Timeout during connect (likely firewall problem)"), None)
    with capturedLogs() as logs:
        world.manager.startService()
        world.advance_to(T0 + timedelta(hours=1))
    assert len(world.runner.calls) == 5  # at 0, 2m, 6m, 14m, 30m (62m is past the hour)
    assert "likely firewall problem" in messages(logs)
    assert "retrying in 2 minutes" in messages(logs)
    assert "retrying in 16 minutes" in messages(logs)
    # mailed once for the run of failures, with certbot's reason, not at every retry
    assert world.mailer.kinds == ["acquire-failed"]
    [notice] = world.mailer.sent
    assert notice.subject == "Could not obtain a TLS certificate for mail.example.com"
    assert "likely firewall problem" in notice.body
    assert "elemta cert test" in notice.body


def test_acquisition_failures_then_success_mail_once_each(world: World) -> None:
    """A failure, a retry that fails, then success: one "acquire-failed" and one "issued" mail;
    a later run of failures would mail again (the streak was reset)."""
    world.manager.startService()
    world.clock.advance(0)
    world.runner.finish(result(False, "DNS problem: NXDOMAIN"))
    world.clock.advance(120)
    world.runner.finish(result(False, "DNS problem: NXDOMAIN"))
    assert world.mailer.kinds == ["acquire-failed"]
    world.clock.advance(240)
    world.runner.finish(result(), cert("0a", world.now()))
    assert world.mailer.kinds == ["acquire-failed", "issued"]


def test_ok_without_certificate_forces_next_attempt(world: World) -> None:
    """certbot exiting 0 without a certificate reaching the cache is a failure; the retry forces."""
    world.manager.startService()
    world.clock.advance(0)
    with capturedLogs() as logs:
        world.runner.finish(result())
    assert "no valid certificate" in messages(logs)
    world.clock.advance(120)
    assert "--force-renewal" in world.runner.calls[1]


def test_renewal_before_notice(world: World) -> None:
    """At 30 days left certbot renew runs first; its new certificate means "renewed", no warning."""
    world.cert = cert("0a", T0)
    world.manager.startService()
    world.clock.advance(0)
    assert world.runner.calls == []
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
        assert world.runner.verbs == ["renew"]
        renew = world.runner.calls[0]
        assert renew[renew.index("--cert-name") + 1] == DOMAIN
        assert "--no-random-sleep-on-renew" in renew
        world.runner.finish(result(), cert("0b", world.now()))  # the installer's work
    assert world.mailer.kinds == ["renewed"]
    assert "renewed: serial 0a -> 0b" in messages(logs)


def test_renewal_failure_mails_reason_and_warns(world: World) -> None:
    """A failed renewal mails its reason and the 30-day warning, and is retried after a while."""
    world.cert = cert("0a", T0)
    world.auto = (result(False, "urn:ietf:params:acme:error:connection"), None)
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
    assert world.runner.verbs == ["renew"]
    assert world.mailer.kinds == ["renewal-failed", "expiry"]
    assert "acme:error:connection" in world.mailer.sent[0].body
    assert "renewal of the certificate for mail.example.com failed" in messages(logs)
    world.advance_to(T0 + timedelta(days=60, hours=13))
    assert world.runner.verbs == ["renew", "renew"]  # the next check, 12h later
    assert world.mailer.kinds == ["renewal-failed", "expiry", "renewal-failed"]


def test_not_due_runs_nothing(world: World) -> None:
    """A fresh certificate: checks every 12h, no certbot, no mail."""
    world.cert = cert("0a", T0)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=10))
    assert world.runner.calls == [] and world.mailer.sent == []


def test_no_duplicate_warnings_after_restart(world: World) -> None:
    """A restarted manager (same state.json) does not mail a threshold it already mailed."""
    world.config = make_config(world.tmp_path, "auto_renew = false\n")
    world.manager = world.new_manager()
    world.cert = cert("0a", T0)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=77))  # 13 days left: 30 and 14 mailed
    assert [n.key for n in world.mailer.sent] == ["expiry:0a:30", "expiry:0a:14"]
    world.manager.stopService()
    world.manager = world.new_manager()
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=78))
    assert [n.key for n in world.mailer.sent] == ["expiry:0a:30", "expiry:0a:14"]
    assert world.runner.calls == []  # auto_renew = false


def test_failed_mail_is_retried_at_next_check(world: World) -> None:
    """A notice whose mail failed is logged and sent at the next check, once."""
    world.config = make_config(world.tmp_path, "auto_renew = false\n")
    world.manager = world.new_manager()
    world.cert = cert("0a", T0)
    world.mailer.failing = True
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
    assert "could not mail notice" in messages(logs) and "421 try later" in messages(logs)
    world.mailer.failing = False
    world.advance_to(T0 + timedelta(days=60, hours=13))
    assert [n.key for n in world.mailer.sent] == ["expiry:0a:30"]


def test_sighup_after_timer_renewal_mails_renewed(world: World) -> None:
    """A renewal by the systemd timer shows up at the next reload: "renewed" is mailed at once."""
    world.cert = cert("0a", T0)
    world.manager.startService()
    world.clock.advance(1)
    world.cert = cert("0b", T0 + timedelta(days=59))  # certbot renew from the timer
    world.manager.after_reload()
    assert world.mailer.kinds == ["renewed"]
    world.manager.after_reload()
    assert world.mailer.kinds == ["renewed"]


def test_reload_while_certbot_runs_waits(world: World) -> None:
    """A SIGHUP during a certbot run does not start a second check; the run's own check covers it."""
    world.manager.startService()
    world.clock.advance(0)
    fired: list[None] = []
    world.manager.after_reload().addCallback(fired.append)
    assert fired == []
    world.runner.finish(result(), cert("0a", world.now()))
    assert fired == [None]
    assert world.mailer.kinds == ["issued"]


def test_short_lived_cap_is_logged_once(world: World) -> None:
    """A 6-day certificate with renewal_days = 30 renews at 2 days left, and the cap is logged once."""
    world.cert = cert("0a", T0, days=6)
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=3, hours=23))
    assert world.runner.calls == []
    assert messages(logs).count("is more than a third") == 1
    world.auto = (result(), None)
    world.advance_to(T0 + timedelta(days=4, hours=12))
    assert world.runner.verbs[:1] == ["renew"]


def test_stop_cancels_running_certbot(world: World) -> None:
    """Stopping the service cancels the certbot run in progress and the next check."""
    world.manager.startService()
    world.clock.advance(0)
    running = world.runner.pending[0]
    stopped = world.manager.stopService()
    assert running.called  # cancelled
    assert stopped.called
    assert world.clock.getDelayedCalls() == []


def test_no_recipients_logs_notice(world: World) -> None:
    """Without recipients a notice is still a log line, and is not retried forever."""
    world.config = make_config(world.tmp_path, "auto_renew = false\n")
    world.manager = world.new_manager()
    world.mailer.recipients = ()
    world.cert = cert("0a", T0)
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=13))
    text = messages(logs)
    assert text.count("notice: TLS certificate for mail.example.com expires in 30 days") == 1
    assert "no [notify] recipients" in text


def served_cert(names: tuple[str, ...], serial: int, not_after: datetime, source: Path,
                is_bootstrap: bool) -> ServedCertificate:
    return ServedCertificate(names=names, serial=serial, not_before=not_after - timedelta(days=45),
                             not_after=not_after, source=source, is_bootstrap=is_bootstrap,
                             is_default=False)


def test_facts_from_served_picks_live_certificate(tmp_path: Path) -> None:
    """Out of ServerTLS.served(), the live/ certificate naming the domain is the one managed."""
    cache = tmp_path / "cache"
    end = T0 + timedelta(days=90)
    served = [
        served_cert(("other.example.com",), 1, end, cache / "live" / "other.example.com.pem", False),
        served_cert((DOMAIN,), 2, end, tmp_path / "hand.pem", False),
        served_cert((DOMAIN,), 0xAB, end, cache / "live" / f"{DOMAIN}.pem", False),
        served_cert((DOMAIN,), 9, end, cache / "bootstrap.pem", True),
    ]
    facts = facts_from_served(served, DOMAIN, cache)
    assert facts is not None and facts.serial == "ab" and not facts.is_bootstrap
    assert facts.not_before == end - timedelta(days=45)  # the served certificate's own start
    only_boot = facts_from_served(served[3:], DOMAIN, cache)
    assert only_boot is not None and only_boot.is_bootstrap
    assert facts_from_served([], DOMAIN, cache) is None


# --- which lineage is renewed, and when it cannot be --------------------------------

def test_renewal_follows_the_recorded_lineage(world: World) -> None:
    """A certificate installed from another certbot config folder is renewed there, under
    its lineage name, with the elemta installer and this config."""
    folders = world.tmp_path / "letsencrypt"
    lineage = lineages.Lineage("mail.example.com-0001", folders / "config", folders / "work",
                               folders / "logs")
    lineage.renewal_conf.parent.mkdir(parents=True)
    lineage.renewal_conf.write_text("version = 5\n")
    lineages.write_record(world.config.tls.letsencrypt.cache_dir, DOMAIN, lineage)
    world.cert = cert("0a", T0)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=60, hours=1))
    assert world.runner.verbs == ["renew"]
    renew = world.runner.calls[0]
    assert renew[renew.index("--config-dir") + 1] == str(folders / "config")
    assert renew[renew.index("--cert-name") + 1] == "mail.example.com-0001"
    assert renew[renew.index("--installer") + 1] == "elemta"
    assert renew[renew.index("--elemta-config") + 1] == str(world.config.path)


def test_blocked_renewal_is_said_at_start_and_not_attempted(tmp_path: Path) -> None:
    """When the daemon's user cannot write the lineage's folders, the start-up log says so
    with the fix, and certbot is never run into a permission error."""
    folders = tmp_path / "letsencrypt"
    lineage = lineages.Lineage(DOMAIN, folders / "config", folders / "work", folders / "logs")
    lineage.renewal_conf.parent.mkdir(parents=True)
    lineage.renewal_conf.write_text("version = 5\n")
    world = World(tmp_path)
    lineages.write_record(world.config.tls.letsencrypt.cache_dir, DOMAIN, lineage)
    stranger = lineages.User(uid=4242, gids=frozenset({4242}), name="elemta")
    world.manager = CertManager(world.config, world.served, world.clock, world.runner,
                                world.mailer, reload=world.reload, python="py", user=stranger)
    world.cert = cert("0a", T0)
    folders.chmod(0o755)
    with capturedLogs() as logs:
        world.manager.startService()
        world.clock.advance(0)
    started = messages(logs)
    assert f"User elemta, who runs elemta, cannot write {folders / 'config'}" in started
    assert "so elemta cannot renew it: enable the packaged timer" in started
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
    assert world.runner.calls == []
    assert "cannot write" not in messages(logs)  # said once per certificate, not per check
    assert world.mailer.kinds == ["expiry"]  # the expiry notices stay the backstop


def test_failed_acquisition_says_what_is_served(world: World) -> None:
    """An expired certificate still served is named as such, not as "the bootstrap"."""
    world.cert = cert("0a", T0 - timedelta(days=91))
    world.auto = (result(False, "Some challenges have failed."), None)
    with capturedLogs() as logs:
        world.manager.startService()
        world.clock.advance(0)
    text = messages(logs)
    assert "still serving the EXPIRED certificate serial 0a (expired 1 day ago)" in text
    assert "bootstrap" not in text


def test_every_check_ends_with_one_heartbeat_line(world: World) -> None:
    """Each check (and each notice check after SIGHUP) ends with one line saying what is
    served and how many notices were due: something to wait for instead of a sleep."""
    world.cert = cert("0a", T0)
    with capturedLogs() as logs:
        world.manager.startService()
        world.clock.advance(0)
        world.manager.after_reload()
    lines = [formatEvent(e) for e in logs if "certificate check done" in formatEvent(e)]
    assert lines == [f"certificate check done: serial 0a (valid until "
                     f"{(T0 + timedelta(days=90)).isoformat()}); no notice due"] * 2


# --- in a cluster: under the issuance lock, notices claimed -------------------------

@dataclass
class FakeCoordinator:
    """The cluster's lock as the manager sees it: granted or refused as the test says;
    ``arrives`` is a certificate another node published, installed when the lock is taken."""

    world: World
    grant: bool = True
    arrives: CertFacts | None = None
    begun: int = 0
    ended: int = 0

    def begin(self, name: str) -> Deferred[Permit]:
        self.begun += 1
        if not self.grant:
            return succeed(Permit(False, reason="node mx2 holds the issuance lock",
                                  retry_after=61.0))
        if self.arrives is not None:
            self.world.cert = self.arrives
        return succeed(Permit(True, lease=Lease(name, "mx1 01", self.begun)))

    def end(self, permit: Permit) -> Deferred[None]:
        self.ended += 1
        return succeed(None)


@dataclass
class FakeClaims:
    """Notice claims: keys in ``others`` belong to another node; ``down``: Redis unreachable."""

    others: set[str] = field(default_factory=set)
    down: bool = False
    released: list[str] = field(default_factory=list)

    def claim(self, key: str) -> Deferred[bool | None]:
        return succeed(None if self.down else key not in self.others)

    def release(self, key: str) -> Deferred[None]:
        self.released.append(key)
        return succeed(None)


def cluster_manager(world: World, coordinator: FakeCoordinator,
                    claims: FakeClaims | None = None) -> CertManager:
    world.manager = CertManager(world.config, world.served, world.clock, world.runner,
                                world.mailer, reload=world.reload, python="py",
                                coordinator=coordinator, claims=claims or FakeClaims())
    return world.manager


def test_cluster_refused_lock_runs_no_certbot_and_looks_again_later(world: World) -> None:
    """Another node holds the lock: no certbot here, and the next check comes when the
    coordinator says (not the 1-second acquisition retry, not 12 hours)."""
    manager = cluster_manager(world, FakeCoordinator(world, grant=False))
    manager.startService()
    world.clock.advance(0)
    assert world.runner.calls == []
    [next_check] = world.clock.getDelayedCalls()
    assert next_check.getTime() - world.clock.seconds() == 61.0


def test_cluster_holder_checks_again_before_running_certbot(world: World) -> None:
    """Having taken the lock, a node that finds another node's certificate installed meanwhile
    runs no certbot, and gives the lock back."""
    coordinator = FakeCoordinator(world, arrives=cert("0b", T0))
    manager = cluster_manager(world, coordinator)
    manager.startService()
    world.clock.advance(0)
    assert world.runner.calls == []
    assert (coordinator.begun, coordinator.ended) == (1, 1)


def test_cluster_node_without_lineage_renews_by_obtaining(world: World) -> None:
    """A node that got the certificate from another node has no certbot lineage to renew:
    when renewal is due and the lock is ours, it obtains a new certificate (forced), and
    the lock is given back after certbot, failed or not."""
    world.cert = cert("0a", T0 - timedelta(days=80))
    coordinator = FakeCoordinator(world)
    manager = cluster_manager(world, coordinator)
    manager.startService()
    world.clock.advance(0)
    assert world.runner.verbs == ["certonly"] and "--force-renewal" in world.runner.calls[0]
    world.runner.finish(result(False, "CA down"))
    assert (coordinator.begun, coordinator.ended) == (1, 1)


def test_cluster_notice_claimed_by_another_node_is_not_mailed(world: World) -> None:
    """A notice another node claimed is recorded as sent without a mail; one nobody can
    claim (Redis down) stays due and goes out once Redis answers; a mail that fails gives
    the claim back."""
    world.cert = cert("0a", T0)
    claims = FakeClaims(others={"renewed:0b"})
    manager = cluster_manager(world, FakeCoordinator(world), claims)
    manager.startService()
    world.clock.advance(0)
    world.cert = cert("0b", T0 + timedelta(days=60))
    manager.after_reload()
    assert world.mailer.kinds == []
    world.cert = cert("0c", T0 + timedelta(days=61))
    claims.down = True
    manager.after_reload()
    assert world.mailer.kinds == []
    claims.down = False
    world.mailer.failing = True
    manager.after_reload()
    assert claims.released == ["renewed:0c"]
    world.mailer.failing = False
    manager.after_reload()
    assert world.mailer.kinds == ["renewed"]
    assert "0c" in world.mailer.sent[0].body
