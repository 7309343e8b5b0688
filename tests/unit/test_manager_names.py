"""Several names per certificate in the manager: a served certificate whose names differ
from [tls.letsencrypt] names (extra_names, mta-sts.<d>) is replaced at the next check by one
for the whole configured set, and the log says which names were missing or extra."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from twisted.logger import capturedLogs

from elemta_smtp.acme.renewal import CertFacts, name_mismatch
from elemta_smtp.config import parse_config
from tests.unit.test_manager import DOMAIN, T0, World, messages, result

NAMES = (DOMAIN, "mx2.example.com", "mta-sts.example.com")


def world_with(tmp_path: Path, names: tuple[str, ...]) -> World:
    """A world whose served certificate has ``names``; the config asks for NAMES."""
    world = World(tmp_path)
    text = (f'[server]\nhostname = "{DOMAIN}"\n[delivery]\nlocal_domains = ["example.com"]\n'
            '[tls.letsencrypt]\nenabled = true\nemail = "admin@example.com"\ncache_dir = "cache"\n'
            'extra_names = ["mx2.example.com"]\n[mta_sts]\nenabled = true\n')
    (tmp_path / "elemta.toml").write_text(text)
    world.config = parse_config(text, str(tmp_path / "elemta.toml"), tmp_path)
    world.manager = world.new_manager()
    world.cert = CertFacts("0a", world.now(), world.now() + timedelta(days=90), names)
    return world


def test_config_names_are_the_certificate_names(tmp_path: Path) -> None:
    """The world's config asks for the domain, the extra name and mta-sts.example.com."""
    assert world_with(tmp_path, NAMES).config.tls.letsencrypt.names == NAMES


def test_matching_certificate_is_kept(tmp_path: Path) -> None:
    """A certificate with exactly the configured names: no certbot run."""
    world = world_with(tmp_path, tuple(reversed(NAMES)))
    world.manager.startService()
    world.clock.advance(0)
    assert world.runner.calls == []


def test_missing_name_leads_to_a_new_certificate_for_all_names(tmp_path: Path) -> None:
    """A name added to elemta.toml: certonly -d for every configured name, forced, logged once."""
    world = world_with(tmp_path, (DOMAIN,))
    with capturedLogs() as logs:
        world.manager.startService()
        world.clock.advance(0)
    [call] = world.runner.calls
    assert [call[i + 1] for i, a in enumerate(call) if a == "-d"] == list(NAMES)
    assert "--force-renewal" in call
    text = messages(logs)
    assert ("the certificate served (serial 0a) does not match the configured names: it does "
            "not cover mx2.example.com, mta-sts.example.com: obtaining a new certificate for "
            "mail.example.com, mx2.example.com, mta-sts.example.com") in text
    assert text.count("does not match the configured names") == 1
    world.runner.finish(result(), CertFacts("0b", world.now(), world.now() + timedelta(days=90), NAMES))
    assert world.mailer.kinds == ["issued"]
    world.clock.advance(12 * 3600)
    assert len(world.runner.calls) == 1  # the new certificate is the right one


def test_removed_name_leads_to_a_new_certificate_without_it(tmp_path: Path) -> None:
    """A name removed from elemta.toml: a new certificate without it, the log names it."""
    world = world_with(tmp_path, (*NAMES, "old.example.com"))
    with capturedLogs() as logs:
        world.manager.startService()
        world.clock.advance(0)
    assert world.runner.verbs == ["certonly"]
    assert "it covers old.example.com, no longer in elemta.toml" in messages(logs)


def test_name_mismatch_is_pure() -> None:
    """Missing names honour wildcards; extra names are compared without case or final dot."""
    t = CertFacts("1", T0, T0, names=("*.example.com", "Mail.Example.com"))
    assert name_mismatch(t, ["mail.example.com.", "mx.example.com"]) == ((), ("*.example.com",))
    assert name_mismatch(t, ["a.b.example.com", "mail.example.com"]) == (("a.b.example.com",),
                                                                         ("*.example.com",))
