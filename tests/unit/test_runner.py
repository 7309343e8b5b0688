"""The certbot runner: real child processes, timeouts that kill the whole
process group, what certbot said about a failure as the reason; command lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from elemta_smtp.acme.runner import (
    CERTBOT_MAIN,
    ProcessRunner,
    SpawnReactor,
    _short,
    certonly_command,
    renew_command,
)
from elemta_smtp.cache.lineages import Lineage, own_lineage
from elemta_smtp.config import parse_config

PY = sys.executable


def _config(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "elemta.toml"
    text = ('[tls.letsencrypt]\nenabled = true\ndomain = "mail.example.com"\n'
            'email = "admin@example.com"\ncache_dir = "cache"\n' + extra)
    path.write_text(text)
    return parse_config(text, str(path), tmp_path)


def test_certonly_command(tmp_path: Path) -> None:
    """certonly uses the elemta plugin both ways, the config path, dirs in the cache, the ACME server."""
    config = _config(tmp_path, 'directory_url = "https://127.0.0.1:14000/dir"\nkey_type = "rsa"\n')
    argv = certonly_command(config, python="py")
    assert argv[:3] == ["py", "-c", CERTBOT_MAIN]
    text = " ".join(argv)
    for part in ("certonly -a elemta -i elemta", f"--elemta-config {tmp_path / 'elemta.toml'}",
                 "-d mail.example.com", "--cert-name mail.example.com",
                 "--server https://127.0.0.1:14000/dir", "-m admin@example.com --agree-tos",
                 "--non-interactive", "--key-type rsa",
                 f"--config-dir {tmp_path / 'cache/certbot/config'}",
                 f"--work-dir {tmp_path / 'cache/certbot/work'}",
                 f"--logs-dir {tmp_path / 'cache/certbot/logs'}"):
        assert part in text
    assert "--dry-run" not in argv and "--force-renewal" not in argv
    assert "--dry-run" in certonly_command(config, dry_run=True)
    assert "--force-renewal" in certonly_command(config, force=True)


def test_renew_command(tmp_path: Path) -> None:
    """renew names elemta's lineage in its own folders, never sleeps at random, installs with
    the elemta installer and this config, and forces only when asked."""
    config = _config(tmp_path)
    lineage = own_lineage(tmp_path / "cache", "mail.example.com")
    argv = renew_command(config, lineage, python="py")
    text = " ".join(argv)
    assert "renew --cert-name mail.example.com --no-random-sleep-on-renew" in text
    assert " ".join(lineage.dir_args()) in text
    assert f"--config-dir {tmp_path / 'cache/certbot/config'}" in text
    assert f"--installer elemta --elemta-config {tmp_path / 'elemta.toml'}" in text
    assert "--force-renewal" not in argv
    assert renew_command(config, lineage, force=True)[-1] == "--force-renewal"


def test_renew_command_follows_a_recorded_lineage(tmp_path: Path) -> None:
    """A lineage installed from another certbot config folder is renewed there, by its name."""
    config = _config(tmp_path)
    lineage = Lineage("mail.example.com-0001", Path("/etc/letsencrypt"),
                      Path("/var/lib/letsencrypt"), Path("/var/log/letsencrypt"))
    text = " ".join(renew_command(config, lineage, python="py"))
    assert ("--config-dir /etc/letsencrypt --work-dir /var/lib/letsencrypt "
            "--logs-dir /var/log/letsencrypt") in text
    assert "renew --cert-name mail.example.com-0001 " in text
    assert str(tmp_path / "cache") not in text


OWN = own_lineage(Path("/var/lib/elemta"), "mail.example.com")


@pytest.mark.parametrize(("build", "expected"), [
    (lambda c: renew_command(c, OWN), "certbot renew"),
    (lambda c: renew_command(c, OWN, force=True), "certbot renew"),
    (certonly_command, "certbot certonly"),
    (lambda c: certonly_command(c, dry_run=True), "certbot certonly"),
    (lambda c: ["/usr/local/bin/certbot", "--config-dir", "/x", "renew"], "certbot renew"),
    (lambda c: ["/usr/bin/sleep", "60"], "sleep 60"),
], ids=["renew", "forced-renew", "certonly", "dry-run", "certbot-binary", "other-command"])
def test_log_names_the_certbot_verb(tmp_path: Path, build: Any, expected: str) -> None:
    """Timeout and stop log lines say "certbot renew", not "/usr/bin/python3 -c"."""
    assert _short(build(_config(tmp_path))) == expected


def test_certonly_needs_a_config_path() -> None:
    """Without a config file path certbot could not find elemta's settings: say so."""
    config = parse_config('[tls.letsencrypt]\nenabled = true\nemail = "a@example.com"\n')
    with pytest.raises(ValueError, match="-c PATH"):
        certonly_command(config)


def test_environment_passed_through(tmp_path: Path) -> None:
    """The runner hands the daemon's environment (REQUESTS_CA_BUNDLE included) to certbot."""
    runner = ProcessRunner(reactor=cast(SpawnReactor, None), env={"REQUESTS_CA_BUNDLE": "/x.pem"})
    assert runner._env == {"REQUESTS_CA_BUNDLE": "/x.pem"}
    assert ProcessRunner(reactor=cast(SpawnReactor, None))._env == dict(os.environ)
