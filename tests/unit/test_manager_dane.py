"""The certificate manager with [tls.dane], a changed key_type and the CA's renewal
information, driven by a task.Clock with a scripted certbot, a recording mailer, and
scripted ARI answers and TLSA lookups."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import capturedLogs

from elemta_smtp.acme import ari
from elemta_smtp.acme.dane import NameCheck
from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.config import parse_config
from tests.unit.test_manager import DOMAIN, T0, World, cert, messages, result

TLSA = "3 1 1 " + "aa" * 32


def setup(tmp_path: Path, key_type: str = "ecdsa", dane: str = "", *,
          ari_source: object = None, watch: object = None) -> World:
    """A World whose config has ``key_type`` and a [tls.dane] section, and whose manager
    gets the ARI source and TLSA watch given."""
    world = World(tmp_path)
    path = tmp_path / "elemta.toml"
    text = (f'[server]\nhostname = "{DOMAIN}"\n'
            f'[tls.letsencrypt]\nenabled = true\nemail = "admin@example.com"\n'
            f'cache_dir = "cache"\nkey_type = "{key_type}"\n'
            f'[tls.renewal]\ncheck_interval = "12h"\n[tls.dane]\n{dane}')
    path.write_text(text)
    world.config = parse_config(text, str(path), tmp_path)
    world.manager = CertManager(world.config, world.served, world.clock, world.runner,
                                world.mailer, reload=world.reload, python="py",
                                ari=ari_source, dane=watch)  # type: ignore[arg-type]
    return world


def facts(serial: str, start: datetime, key_type: str = "ecdsa", tlsa: str = TLSA,
          ari_id: str = "") -> CertFacts:
    return replace(cert(serial, start), key_type=key_type, tlsa=tlsa, ari_id=ari_id)


def test_dane_renewal_reuses_the_key(tmp_path: Path) -> None:
    """With [tls.dane] enabled both the first certonly and every renew keep the key
    (certbot --reuse-key, which certbot stores for its own timer too)."""
    world = setup(tmp_path, dane="enabled = true\n")
    world.manager.startService()
    world.clock.advance(0)
    assert "--reuse-key" in world.runner.calls[0]
    world.runner.finish(result(), facts("0a", T0))
    world.advance_to(T0 + timedelta(days=60, hours=1))
    renew = world.runner.calls[-1]
    assert "renew" in renew and "--reuse-key" in renew
    assert "--new-key" not in renew


def test_key_type_change_makes_a_new_key_at_next_renewal(tmp_path: Path) -> None:
    """key_type = "rsa" while an ECDSA certificate is served: the next renewal asks certbot
    for a new RSA key, said once in the log; nothing runs before it is due."""
    world = setup(tmp_path, key_type="rsa")
    world.cert = facts("0a", T0, key_type="ecdsa")
    world.manager.startService()
    with capturedLogs() as logs:
        world.clock.advance(0)
        assert world.runner.calls == []
        world.advance_to(T0 + timedelta(days=60, hours=1))
    renew = world.runner.calls[-1]
    assert renew[-3:] == ["--key-type", "rsa", "--new-key"]
    assert messages(logs).count("its next renewal makes a new RSA key") == 1


def test_key_type_change_with_dane_asks_for_a_rollover(tmp_path: Path) -> None:
    """With DANE the key is kept and a notice (once) asks for a staged rollover."""
    world = setup(tmp_path, key_type="rsa", dane="enabled = true\n")
    world.cert = facts("0a", T0, key_type="ecdsa")
    world.auto = (result(), None)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=62))
    renews = [c for c in world.runner.calls if "renew" in c]
    assert renews and all("--new-key" not in c for c in renews)
    assert world.mailer.kinds.count("key-type-change") == 1
    [notice] = [n for n in world.mailer.sent if n.kind == "key-type-change"]
    assert "elemta dane rollover start" in notice.body


class Watch:
    """Scripted TLSA lookups: the published values the test sets."""

    def __init__(self) -> None:
        self.published: tuple[str, ...] = (TLSA,)
        self.calls = 0

    def check(self, served: CertFacts) -> Deferred[list[NameCheck]]:
        self.calls += 1
        return succeed([NameCheck(DOMAIN, self.published, None, served.tlsa in self.published)])


def test_check_dns_mails_a_mismatch_once_per_key(tmp_path: Path) -> None:
    """A published record that stops matching is one mail and one warning over many checks;
    fixed and broken again, it is mailed again."""
    watch = Watch()
    world = setup(tmp_path, dane="check_dns = true\n", watch=watch)
    world.cert = facts("0a", T0)
    world.manager.startService()
    with capturedLogs() as logs:
        world.clock.advance(0)
        assert world.mailer.kinds == []
        watch.published = ("3 1 1 " + "bb" * 32,)
        world.advance_to(T0 + timedelta(days=2))  # four checks
        assert world.mailer.kinds == ["dane-mismatch"]
        assert messages(logs).count("matches no published TLSA record") == 1
        watch.published = (TLSA,)
        world.advance_to(T0 + timedelta(days=3))
        watch.published = ("3 1 1 " + "cc" * 32,)
        world.advance_to(T0 + timedelta(days=4))
    assert world.mailer.kinds == ["dane-mismatch", "dane-mismatch"]
    assert watch.calls >= 8


def test_check_dns_off_looks_nothing_up(tmp_path: Path) -> None:
    """Without check_dns no TLSA lookup runs."""
    watch = Watch()
    world = setup(tmp_path, watch=watch)
    world.cert = facts("0a", T0)
    world.manager.startService()
    world.advance_to(T0 + timedelta(days=2))
    assert watch.calls == 0


class Source:
    """Scripted renewal information: one answer per fetch, recorded."""

    def __init__(self, window: ari.Window | None, retry: timedelta = timedelta(hours=6),
                 supported: bool = True) -> None:
        self.window = window
        self.retry = retry
        self.supported = supported
        self.fetches: list[datetime] = []

    def fetch(self, directory_url: str, ident: str, now: datetime) -> Deferred[ari.Answer]:
        self.fetches.append(now)
        return succeed(ari.Answer(self.window, now + self.retry, supported=self.supported,
                                  error="" if self.supported else "no renewalInfo"))


def test_ari_window_renews_early_and_follows_retry_after(tmp_path: Path) -> None:
    """The CA's window opens 5 days in, long before the days rule: the manager wakes at the
    drawn moment and renews (forced: certbot would draw its own), asking the CA no more often
    than Retry-After allows."""
    window = ari.Window(T0 + timedelta(days=5), T0 + timedelta(days=5, hours=2))
    source = Source(window, retry=timedelta(days=1))
    world = setup(tmp_path, ari_source=source)
    world.cert = facts("0a", T0, ari_id="id-0a")
    world.manager.startService()
    with capturedLogs() as logs:
        world.clock.advance(0)
        assert world.runner.calls == []
        world.advance_to(window.end)
    [renew] = world.runner.calls
    assert "--force-renewal" in renew
    assert "the CA's renewal window (ARI)" in messages(logs)
    # daily (Retry-After), not at every 12-hour check: days 0 .. 5
    assert [(f - T0).days for f in source.fetches] == [0, 1, 2, 3, 4, 5]
    saved = json.loads((tmp_path / "cache" / "ari.json").read_text())
    assert saved["certificates"][DOMAIN]["cert_id"] == "id-0a"


def test_ari_moment_survives_a_restart(tmp_path: Path) -> None:
    """The moment drawn inside a window is kept in ari.json: a restarted manager renews at
    the same moment, not at a new draw."""
    window = ari.Window(T0 + timedelta(days=5), T0 + timedelta(days=6))
    world = setup(tmp_path, ari_source=Source(window))
    world.cert = facts("0a", T0, ari_id="id-0a")
    world.manager.startService()
    world.clock.advance(0)
    moment = world.manager._ari.schedule.moment  # type: ignore[union-attr]
    world.manager.stopService()
    again = setup(tmp_path, ari_source=Source(window))
    again.cert = world.cert
    again.manager.startService()
    again.clock.advance(0)
    assert again.manager._ari.schedule.moment == moment  # type: ignore[union-attr]


def test_no_renewal_info_falls_back_to_days_rule(tmp_path: Path) -> None:
    """A CA without renewalInfo: said once, and the days rule renews (not forced)."""
    source = Source(None, supported=False)
    world = setup(tmp_path, ari_source=source)
    world.cert = facts("0a", T0, ari_id="id-0a")
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
    [renew] = world.runner.calls
    assert "--force-renewal" not in renew
    assert messages(logs).count("offers no renewal information (ARI)") == 1


class BrokenSource:
    """Renewal information whose fetch fails with an unexpected exception."""

    def fetch(self, directory_url: str, ident: str, now: datetime) -> Deferred[ari.Answer]:
        return fail(OverflowError("date value out of range"))


def test_a_failing_ari_step_leaves_the_days_rule_in_charge(tmp_path: Path) -> None:
    """An exception from the ARI step (any kind) is logged, and the certificate is still
    renewed by renewal_days and the check completes (it stopped every check)."""
    world = setup(tmp_path, ari_source=BrokenSource())
    world.cert = facts("0a", T0, ari_id="id-0a")
    world.manager.startService()
    with capturedLogs() as logs:
        world.advance_to(T0 + timedelta(days=60, hours=1))
    [renew] = world.runner.calls
    assert "renew" in renew
    said = messages(logs)
    assert "the CA's renewal information (ARI) could not be used" in said
    assert "certificate check failed unexpectedly" not in said


def test_a_mismatch_mail_names_the_key_and_only_the_names_that_mismatch(tmp_path: Path) -> None:
    """Two MX names, only one published wrong: the mail's subject names the key type served
    and that name alone (both names, no key, read alike for the ECDSA and RSA mails)."""
    class TwoNames(Watch):
        def check(self, served: CertFacts) -> Deferred[list[NameCheck]]:
            return succeed([NameCheck(DOMAIN, (TLSA,), None, True),
                            NameCheck("mx2.example.com", ("3 1 1 " + "bb" * 32,), None, False)])

    world = setup(tmp_path, dane="check_dns = true\n", watch=TwoNames())
    world.cert = facts("0a", T0)  # the watch answers for both MX names ([mta_sts] mx)
    world.manager.startService()
    world.clock.advance(0)
    [mail] = world.mailer.sent
    assert mail.subject == "DANE: no TLSA record matches the ECDSA key served for mx2.example.com"
