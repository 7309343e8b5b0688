"""The ``elemta`` certbot plugin's methods, each on a real certbot config parsed by
certbot's own argument parser, on real files (processes, signals and sockets:
tests/integration/test_plugin_restart.py)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from certbot import errors, interfaces
from certbot._internal import cli
from certbot._internal.plugins import disco
from certbot.display import ops as display_ops
from cryptography import x509

from certbot_elemta._internal import success
from certbot_elemta._internal.configurator import ElemtaConfigurator
from certbot_elemta._internal.lineage import find_lineage
from elemta_smtp import daemon
from elemta_smtp.cache import layout, lineages
from tests.plugin_support import CONFIG, Root, deploy, display, install, make_lineage, root

__all__ = ["display", "root"]  # fixtures
pytestmark = pytest.mark.usefixtures("display")

# --- prepare / config_test ---------------------------------------------------------

def test_prepare_accepts_a_good_config(root: Root) -> None:
    """prepare() loads elemta.toml and keeps it for the other methods."""
    plugin = root.plugin()
    plugin.prepare()
    assert plugin.elemta.tls.letsencrypt.cache_dir == root.cache_dir


def test_prepare_without_config_is_no_installation(root: Root) -> None:
    """A missing elemta.toml is NoInstallationError that says how to point at one."""
    root.config_file.unlink()
    with pytest.raises(errors.NoInstallationError, match=r"does not exist.*--elemta-config"):
        root.plugin().prepare()


@pytest.mark.parametrize(("text", "words"), [
    pytest.param('[server]\nhostnme = "a.example.com"\n', 'unknown key "hostnme"', id="unknown-key"),
    pytest.param("[server\n", "not valid TOML", id="not-toml"),
    pytest.param('[tls.letsencrypt]\nhttp_addr = "nowhere"\n', "is not an address", id="bad-address"),
])
def test_bad_config_is_misconfiguration_with_problems(root: Root, text: str, words: str) -> None:
    """prepare() and config_test() raise MisconfigurationError listing elemta's own problems."""
    root.write(text)
    plugin = root.plugin()
    for method in (plugin.prepare, plugin.config_test):
        with pytest.raises(errors.MisconfigurationError) as info:
            method()
        assert words in str(info.value) and str(root.config_file) in str(info.value)


def test_config_option_defaults_to_elemta_config_env(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --elemta-config the plugin reads $ELEMTA_CONFIG, like the daemon."""
    monkeypatch.setenv("ELEMTA_CONFIG", "/somewhere/elemta.toml")
    argv = ["certonly", "--config-dir", str(root.certbot / "c"), "--work-dir", str(root.certbot / "w"),
            "--logs-dir", str(root.certbot / "l")]
    config = cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), argv)
    assert ElemtaConfigurator(config, "elemta").config_file == Path("/somewhere/elemta.toml")


# --- installer ---------------------------------------------------------------------

def test_get_all_names(root: Root) -> None:
    """The names offered are the letsencrypt domain and the server hostname."""
    root.write(CONFIG.format(root=root.path, http_port=9).replace('domain = ""',
                                                                  'domain = "mail.example.com"'))
    assert root.plugin().get_all_names() == {"mail.example.com", "mx.example.com"}


def test_deploy_cert_writes_one_cache_file_named_after_primary(root: Root) -> None:
    """deploy_cert (called per domain) queues live/<primary>.pem; restart (certbot's last
    call) writes it once: key + full chain, 0600."""
    lineage = make_lineage(root.live_dir, ["mail.example.com", "smtp.example.com"])
    plugin = root.plugin("run")
    deploy(plugin, lineage, "mail.example.com")
    deploy(plugin, lineage, "smtp.example.com")
    assert not layout.live_dir(root.cache_dir).exists()  # installed by restart, not before
    plugin.restart()
    assert [p.name for p in layout.live_dir(root.cache_dir).iterdir()] == ["mail.example.com.pem"]
    written = (layout.live_dir(root.cache_dir) / "mail.example.com.pem")
    assert written.read_bytes() == (lineage / "privkey.pem").read_bytes() + \
        (lineage / "fullchain.pem").read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_deploy_cert_refuses_a_mismatched_key(root: Root) -> None:
    """A key that does not belong to the certificate is a PluginError and nothing is written."""
    lineage = make_lineage(root.live_dir, ["mail.example.com"])
    other = make_lineage(root.live_dir, ["other.example.com"])
    (lineage / "privkey.pem").write_bytes((other / "privkey.pem").read_bytes())
    with pytest.raises(errors.PluginError, match=r"Could not install the certificate for mail\.example\.com"):
        deploy(root.plugin("run"), lineage, "mail.example.com")
    assert not (layout.live_dir(root.cache_dir) / "mail.example.com.pem").exists()


def test_deploy_then_save_edits_toml_keeping_comments(root: Root) -> None:
    """save() turns [tls] on and sets the empty domain, keeping every comment and other line."""
    original = root.config_file.read_text()
    plugin = root.plugin("run")
    deploy(plugin, make_lineage(root.live_dir, ["mail.example.com"]), "mail.example.com")
    assert root.config_file.read_text() == original  # nothing written before save()
    plugin.save("Deployed ACME Certificate")
    edited = root.config_file.read_text()
    assert edited == original.replace("enabled = false", "enabled = true").replace(
        'domain = ""', 'domain = "mail.example.com"')
    plugin.config_test()


def test_rollback_restores_toml_byte_exact(root: Root) -> None:
    """rollback_checkpoints(1) after a deploy restores elemta.toml byte for byte."""
    original = root.config_file.read_bytes()
    plugin = root.plugin("run")
    deploy(plugin, make_lineage(root.live_dir, ["mail.example.com"]), "mail.example.com")
    plugin.save("Deployed ACME Certificate")
    assert root.config_file.read_bytes() != original
    root.plugin("rollback").rollback_checkpoints(1)
    assert root.config_file.read_bytes() == original


def test_recovery_routine_undoes_unfinalized_save(root: Root) -> None:
    """A save() without a title is undone by recovery_routine() (certbot's error path)."""
    original = root.config_file.read_bytes()
    plugin = root.plugin("run")
    deploy(plugin, make_lineage(root.live_dir, ["mail.example.com"]), "mail.example.com")
    plugin.save()
    assert root.config_file.read_bytes() != original
    plugin.recovery_routine()
    assert root.config_file.read_bytes() == original


def test_save_without_changes_leaves_file_and_makes_no_checkpoint(root: Root) -> None:
    """When elemta.toml already serves the domain, save() touches nothing."""
    text = CONFIG.format(root=root.path, http_port=9).replace("enabled = false", "enabled = true") \
        .replace('domain = ""', 'domain = "mail.example.com"')
    root.write(text)
    before = root.config_file.stat()
    plugin = root.plugin("run")
    deploy(plugin, make_lineage(root.live_dir, ["mail.example.com"]), "mail.example.com")
    plugin.save("Deployed ACME Certificate")
    assert root.config_file.read_text() == text
    assert root.config_file.stat().st_mtime_ns == before.st_mtime_ns
    assert list(Path(plugin.config.backup_dir).iterdir()) == []


class _Lineage(interfaces.RenewableCert):
    """The part of certbot's lineage that renew_deploy reads."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder, self._names = folder, names

    @property
    def cert_path(self) -> str:
        return str(self.folder / "cert.pem")

    @property
    def key_path(self) -> str:
        return str(self.folder / "privkey.pem")

    @property
    def chain_path(self) -> str:
        return str(self.folder / "chain.pem")

    @property
    def fullchain_path(self) -> str:
        return str(self.folder / "fullchain.pem")

    @property
    def lineagename(self) -> str:
        return self.folder.name

    def names(self) -> list[str]:
        return self._names


def test_renew_deploy_writes_the_renewed_certificate(root: Root) -> None:
    """renew_deploy(lineage) installs lineage.names()[0] into the cache."""
    folder = make_lineage(root.live_dir, ["mail.example.com", "smtp.example.com"])
    plugin = root.plugin("renew")
    assert isinstance(plugin, interfaces.RenewDeployer)
    plugin.renew_deploy(_Lineage(folder, ["mail.example.com", "smtp.example.com"]))
    plugin.restart()  # certbot renew: renew_deploy, then restart
    written = layout.live_dir(root.cache_dir) / "mail.example.com.pem"
    assert written.read_bytes().endswith((folder / "fullchain.pem").read_bytes())


def test_enhance_says_elemta_has_none(root: Root) -> None:
    """enhance() refuses plainly; supported_enhancements() is empty."""
    plugin = root.plugin("run")
    assert plugin.supported_enhancements() == []
    with pytest.raises(errors.PluginError, match=r"elemta supports no enhancements.*--redirect"):
        plugin.enhance("mail.example.com", "redirect")


# --- restart -----------------------------------------------------------------------

def test_restart_without_daemon_is_not_an_error(root: Root, display: io.StringIO) -> None:
    """No pid file: restart() says the daemon will use the certificate when it starts."""
    root.plugin("install").restart()
    assert "elemta is not running" in display.getvalue()
    assert "it serves it when it starts" in display.getvalue()


def test_run_ends_with_what_elemta_serves_not_https(root: Root, display: io.StringIO) -> None:
    """`certbot run -i elemta` ends with what elemta serves and where, not "enabled HTTPS"."""
    folder = make_lineage(root.live_dir, ["mail.example.com"])
    plugin = root.plugin("run")
    success.forget()
    plugin.deploy_cert("mail.example.com", str(folder / "cert.pem"), str(folder / "privkey.pem"),
                       str(folder / "chain.pem"), str(folder / "fullchain.pem"))
    plugin.save("install")  # certbot's order: deploy_cert, save, restart (turns [tls] on)
    plugin.restart()
    display_ops.success_installation(["mail.example.com"])  # what certbot's run() calls last
    text = display.getvalue()
    success.forget()
    assert "Congratulations" not in text and "https://" not in text
    serial = format(x509.load_pem_x509_certificate(
        (folder / "cert.pem").read_bytes()).serial_number, "x")
    assert (f"elemta now serves the certificate for mail.example.com (serial {serial}, valid "
            "until ") in text
    assert f"from {layout.live_dir(root.cache_dir) / 'mail.example.com.pem'}" in text
    assert "SMTP 127.0.0.1:2525 (STARTTLS) and SMTPS 127.0.0.1:4465 (implicit TLS)" in text
    assert text.count("elemta now serves") == 1  # said once, at the end of run


def test_other_installers_keep_certbots_message(display: io.StringIO) -> None:
    """Without the elemta installer in this run, certbot's own success text is unchanged."""
    success.forget()
    display_ops.success_installation(["www.example.com"])
    assert "Congratulations! You have successfully enabled HTTPS on https://www.example.com" \
        in display.getvalue()


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param(None, daemon.Reload.NOT_RUNNING, id="no-file"),
    pytest.param("", daemon.Reload.STALE, id="empty"),
    pytest.param("garbage\n", daemon.Reload.STALE, id="garbage"),
    pytest.param("1\n", daemon.Reload.STALE, id="init"),
    pytest.param("-5\n", daemon.Reload.STALE, id="negative"),
])
def test_reload_daemon_with_unusable_pid_files(tmp_path: Path, content: str | None,
                                               expected: daemon.Reload) -> None:
    """Missing or unusable pid files never lead to a signal."""
    pid_file = tmp_path / "elemta.pid"
    if content is not None:
        pid_file.write_text(content)
    assert daemon.reload_daemon(pid_file)[0] is expected


def test_certonly_restart_installs_the_saved_lineage(root: Root) -> None:
    """certonly -i elemta calls only restart(): it finds and installs the new lineage."""
    folder = make_lineage(root.live_dir, ["mail.example.com"])
    root.plugin("certonly", "-d", "mail.example.com").restart()
    written = layout.live_dir(root.cache_dir) / "mail.example.com.pem"
    assert written.read_bytes().endswith((folder / "fullchain.pem").read_bytes())


def test_certonly_restart_without_lineage_says_what_to_do(root: Root) -> None:
    """If the saved lineage cannot be found, the error names 'certbot install'."""
    with pytest.raises(errors.PluginError, match="certbot install --cert-name"):
        root.plugin("certonly", "-d", "mail.example.com").restart()


def test_find_lineage_prefers_cert_name_then_newest_exact_match(tmp_path: Path) -> None:
    """--cert-name picks its folder; else the newest lineage with exactly the domains."""
    old = make_lineage(tmp_path, ["mail.example.com"])
    os.utime(old / "cert.pem", (1, 1))
    new = make_lineage(tmp_path, ["mail.example.com"], "mail.example.com-0001")
    make_lineage(tmp_path, ["mail.example.com", "b.example.com"], "both")
    assert find_lineage(tmp_path, None, ["mail.example.com"]).key_path == new / "privkey.pem"  # type: ignore[union-attr]
    assert find_lineage(tmp_path, "mail.example.com", []).key_path == old / "privkey.pem"  # type: ignore[union-attr]
    assert find_lineage(tmp_path, None, ["c.example.com"]) is None


# --- authenticator -----------------------------------------------------------------

# --- where a lineage lives, for renewal -----------------------------------------------

def test_deploy_records_the_lineage_and_its_certbot_folders(root: Root) -> None:
    """deploy_cert records which lineage, in which certbot folders, the cache file came from
    (the daemon renews it there, not only in its own folders)."""
    folder = make_lineage(root.live_dir, ["mail.example.com"], "mail.example.com-0001")
    plugin = root.plugin("install")
    deploy(plugin, folder, "mail.example.com")
    plugin.restart()
    recorded = lineages.read_record(root.cache_dir, "mail.example.com")
    assert recorded == lineages.Lineage("mail.example.com-0001", root.certbot / "config",
                                        root.certbot / "work", root.certbot / "logs")
    record = lineages.record_path(root.cache_dir, "mail.example.com")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


def test_renew_deploy_records_the_lineage(root: Root) -> None:
    """renew_deploy records certbot's lineage name (lineagename), not only the cert's name."""
    folder = make_lineage(root.live_dir, ["mail.example.com"], "mx")
    plugin = root.plugin("renew")
    plugin.renew_deploy(_Lineage(folder, ["mail.example.com"]))
    plugin.restart()
    recorded = lineages.read_record(root.cache_dir, "mail.example.com")
    assert recorded is not None and recorded.cert_name == "mx"
    assert recorded.config_dir == root.certbot / "config"


def test_plain_files_are_not_a_lineage(root: Root, tmp_path: Path, display: io.StringIO) -> None:
    """Installing plain files (certbot install --cert-path/--key-path) forgets an old record
    and says at once that nobody renews this certificate."""
    folder = make_lineage(root.live_dir, ["mail.example.com"])
    install(root.plugin("install"), folder)
    assert lineages.read_record(root.cache_dir, "mail.example.com") is not None
    elsewhere = make_lineage(tmp_path / "files", ["mail.example.com"])
    install(root.plugin("install"), elsewhere)
    assert lineages.read_record(root.cache_dir, "mail.example.com") is None
    assert "does not come from a certbot lineage, so nobody renews it" in display.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the cache to another user")
def test_install_warns_when_the_daemon_cannot_renew(root: Root, display: io.StringIO) -> None:
    """Installed (as root) from certbot folders the daemon's user cannot write: the installer
    says so at once, in one sentence with the fix, not at expiry."""
    folder = make_lineage(root.live_dir, ["mail.example.com"])
    (root.certbot / "config" / "renewal").mkdir(parents=True)
    (root.certbot / "config" / "renewal" / "mail.example.com.conf").write_text("version = 5\n")
    root.cache_dir.mkdir(mode=0o700)
    os.chown(root.cache_dir, 65534, 65534)  # the daemon runs as nobody
    root.certbot.chmod(0o700)  # certbot's folders: root's only
    install(root.plugin("install"), folder)
    text = " ".join(display.getvalue().split())
    assert f"Warning: user nobody, who runs elemta, cannot write {root.certbot / 'config'}" in text
    assert "so elemta cannot renew it: enable the packaged timer" in text
    assert "sudo -u nobody certbot certonly -a elemta -i elemta -d" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give elemta.toml another owner")
def test_save_keeps_mode_and_owner_of_elemta_toml(root: Root) -> None:
    """The installer's edit of elemta.toml (atomic, through cache.atomic) keeps the file's
    mode and owner, and leaves no temporary file behind."""
    os.chown(root.config_file, 65534, 65534)
    root.config_file.chmod(0o640)
    plugin = root.plugin("run")
    deploy(plugin, make_lineage(root.live_dir, ["mail.example.com"]), "mail.example.com")
    plugin.save("Deployed ACME Certificate")
    info = root.config_file.stat()
    assert 'domain = "mail.example.com"' in root.config_file.read_text()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 65534, 65534)
    assert sorted(p.name for p in root.path.iterdir() if p.name.startswith(".elemta.toml")) == []
