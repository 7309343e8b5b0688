"""The certbot plugin ``elemta``: installer and HTTP-01 authenticator for the
elemta SMTP server.

Everything it knows about elemta comes from elemta.toml (``--elemta-config``);
everything it gives elemta goes through the certificate cache
(``live/<name>.pem``, ``webroot/``) and one SIGHUP.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from acme import challenges
from certbot import achallenges, configuration, errors, interfaces
from certbot.crypto_util import get_names_from_cert
from certbot.display import util as display_util
from certbot.plugins import common

from certbot_elemta._internal import constants, daemon, success, tomledit
from certbot_elemta._internal.http01 import HTTP01Responder
from certbot_elemta._internal.lineage import find_lineage
from elemta_smtp.cache import layout, lineages, live
from elemta_smtp.config import Config, ConfigError, config_path, load_config
from elemta_smtp.errors import CacheError

logger = logging.getLogger(__name__)


def _problems(error: ConfigError) -> str:
    return "\n".join(f"  {p}" for p in error.problems)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.PluginError(f"Could not read the {what} {path}: {exc.strerror}.") from exc


class ElemtaConfigurator(common.Configurator, interfaces.RenewDeployer):
    """Installs certificates into elemta's cache and answers HTTP-01 from its webroot."""

    description = constants.DESCRIPTION

    @classmethod
    def add_parser_arguments(cls, add: Callable[..., None]) -> None:
        add("config", default=str(config_path(None)), metavar="PATH", help=constants.CONFIG_HELP)

    def __init__(self, config: configuration.NamespaceConfig, name: str) -> None:
        super().__init__(config, name)
        self._config: Config | None = None
        self._pending_text: str | None = None  # elemta.toml as it will be saved
        self._save_notes = ""
        self._deployed: set[tuple[str, str]] = set()
        self._installed = False  # did this run write a certificate into the cache?
        self._installed_path: Path | None = None
        self._http01: HTTP01Responder | None = None

    # --- the config file -------------------------------------------------

    @property
    def config_file(self) -> Path:
        """The elemta.toml this run reads (``--elemta-config``)."""
        return Path(self.conf("config"))

    def _load(self) -> Config:
        try:
            return load_config(self.config_file)
        except ConfigError as exc:
            raise errors.MisconfigurationError(
                f"elemta's configuration {self.config_file} cannot be used:\n{_problems(exc)}\n"
                "Fix it (or pass the right file with --elemta-config) and run certbot again."
            ) from exc

    @property
    def elemta(self) -> Config:
        """The parsed elemta.toml (loaded by ``prepare``)."""
        if self._config is None:
            self._config = self._load()
        return self._config

    def prepare(self) -> None:
        """Check that elemta.toml exists and loads."""
        if not self.config_file.is_file():
            raise errors.NoInstallationError(
                f"elemta's configuration {self.config_file} does not exist. Pass its path with "
                "--elemta-config PATH or set ELEMTA_CONFIG.")
        self._config = self._load()

    def more_info(self) -> str:
        return constants.MORE_INFO

    def config_test(self) -> None:
        """elemta.toml (as it is on disk now) must load without problems."""
        self._config = self._load()

    # --- authenticator -----------------------------------------------------

    def get_chall_pref(self, identifier: str) -> Iterable[type[challenges.Challenge]]:
        return [challenges.HTTP01]

    def perform(self, achalls: Sequence[achallenges.AnnotatedChallenge]
                ) -> list[challenges.ChallengeResponse]:
        if self._http01 is None:
            le = self.elemta.tls.letsencrypt
            self._http01 = HTTP01Responder(le.cache_dir, le.http_addr)
        return self._http01.perform(achalls)

    def cleanup(self, achalls: Sequence[achallenges.AnnotatedChallenge]) -> None:
        if self._http01 is not None:
            self._http01.cleanup(achalls)

    def auth_hint(self, failed_achalls: list[achallenges.AnnotatedChallenge]) -> str:
        le = self.elemta.tls.letsencrypt
        return ("The Certificate Authority could not download the challenge answers from "
                f"http://<domain>/.well-known/acme-challenge/, served by elemta on "
                f"{le.http_addr or '(nothing: http_addr is empty)'} from "
                f"{layout.challenge_dir(le.cache_dir)}. Check that the domain's DNS points to "
                "this machine and that port 80 reaches that address (firewall, NAT).")

    # --- installer ---------------------------------------------------------

    def get_all_names(self) -> set[str]:
        return {self.elemta.tls.letsencrypt.domain, self.elemta.server.hostname}

    def deploy_cert(self, domain: str, cert_path: str, key_path: str,
                    chain_path: str, fullchain_path: str) -> None:
        """Write key + full chain to the cache as ``live/<primary name>.pem``.

        certbot calls this once per domain of the certificate; it is written once.
        """
        cert_pem = _read(cert_path, "certificate")
        names = get_names_from_cert(cert_pem)
        name = names[0] if names else domain
        if (name, fullchain_path) not in self._deployed:
            self._install(name, key_path, fullchain_path, self._lineage_of(cert_path))
            self._deployed.add((name, fullchain_path))
        self._plan_config(name)

    def renew_deploy(self, lineage: interfaces.RenewableCert, *args: object, **kwargs: object) -> None:
        """After ``certbot renew``: write the renewed certificate into the cache."""
        self._install(lineage.names()[0], lineage.key_path, lineage.fullchain_path,
                      self._lineage(lineage.lineagename))

    def _lineage(self, cert_name: str) -> lineages.Lineage:
        """The lineage ``cert_name`` in the folders this certbot run uses."""
        return lineages.Lineage(cert_name, Path(self.config.config_dir).absolute(),
                                Path(self.config.work_dir).absolute(),
                                Path(self.config.logs_dir).absolute())

    def _lineage_of(self, cert_path: str) -> lineages.Lineage | None:
        """The lineage whose live/ folder ``cert_path`` is in; None for plain files
        (``certbot install --cert-path ... --key-path ...``)."""
        folder = Path(cert_path).absolute().parent
        if folder.parent != Path(self.config.live_dir).absolute():
            return None
        return self._lineage(folder.name)

    def _install(self, name: str, key_path: str, fullchain_path: str,
                 lineage: lineages.Lineage | None) -> None:
        key_pem = _read(key_path, "private key")
        fullchain_pem = _read(fullchain_path, "certificate chain")
        cache_dir = self.elemta.tls.letsencrypt.cache_dir
        try:
            path = live.write_certificate(cache_dir, name, key_pem, fullchain_pem)
            if lineage is None:
                lineages.forget_record(cache_dir, name)
            else:
                lineages.write_record(cache_dir, name, lineage)
        except (CacheError, lineages.LineageError, OSError) as exc:
            raise errors.PluginError(
                f"Could not install the certificate for {name} into elemta's cache "
                f"{cache_dir}: {exc}") from exc
        self._installed = True
        self._installed_path = path
        display_util.notify(f"Installed the certificate for {name} into elemta: {path}")
        self._warn_renewal(lineage)

    def _warn_renewal(self, lineage: lineages.Lineage | None) -> None:
        """Say now, not at expiry, when the daemon will not be able to renew what was
        just installed."""
        elemta = self.elemta
        le = elemta.tls.letsencrypt
        if lineage is None:
            problem = (f"This certificate does not come from a certbot lineage, so nobody renews "
                       f"it: renew it yourself before it expires and install it again, or obtain "
                       f"one with certbot certonly -a elemta -i elemta -d {le.domain}.")
        elif not elemta.tls.renewal.auto_renew:
            return  # renewal is the timer's job ([tls.renewal] auto_renew = false)
        else:
            blocker = lineages.renewal_blocker(
                lineage, lineages.daemon_user(le.cache_dir), cache_dir=le.cache_dir,
                domain=le.domain, config_path=elemta.path)
            if blocker is None:
                return
            problem = f"Warning: {blocker}."
        logger.warning(problem)
        display_util.notify(problem)

    def _install_saved_lineage(self) -> None:
        domains = [getattr(d, "dns_name", str(d)) for d in (self.config.domains or [])]
        found = find_lineage(Path(self.config.live_dir), self.config.certname, domains)
        if found is None:
            raise errors.PluginError(
                "certbot saved a certificate but the elemta installer could not find it under "
                f"{self.config.live_dir} (cert name {self.config.certname!r}, domains "
                f"{', '.join(domains) or 'none'}). Install it with 'certbot install --cert-name "
                "NAME -i elemta'.")
        self._install(found.name, str(found.key_path), str(found.fullchain_path),
                      self._lineage(found.cert_name))

    def _plan_config(self, name: str) -> None:
        """Queue the elemta.toml edits that make the daemon serve ``name``; ``save`` writes them."""
        try:
            text = self._pending_text if self._pending_text is not None \
                else self.config_file.read_text(encoding="utf-8")
            new_text, notes = tomledit.plan_changes(text, name)
        except (OSError, ValueError) as exc:
            raise errors.PluginError(f"Could not read {self.config_file}: {exc}") from exc
        if notes:
            self._pending_text = new_text
            self._save_notes += notes

    def enhance(self, domain: str, enhancement: str,
                options: list[str] | str | None = None) -> None:
        raise errors.PluginError(constants.ENHANCEMENT_REFUSAL.format(enhancement=enhancement))

    def supported_enhancements(self) -> list[str]:
        return []

    def save(self, title: str | None = None, temporary: bool = False) -> None:
        """Write queued elemta.toml edits, backed up by certbot's reverter first
        (``certbot rollback`` restores the file byte for byte)."""
        if self._pending_text is None:
            return
        path = str(self.config_file)
        self.add_to_checkpoint({path}, self._save_notes, temporary)
        _atomic_write(self.config_file, self._pending_text)
        display_util.notify(f"Updated {path}: {self._save_notes.strip()}")
        self._pending_text = None
        self._save_notes = ""
        self._config = None
        if title and not temporary:
            self.finalize_checkpoint(title)

    def recovery_routine(self) -> None:
        super().recovery_routine()
        self._forget()

    def rollback_checkpoints(self, rollback: int = 1) -> None:
        super().rollback_checkpoints(rollback)
        self._forget()

    def _forget(self) -> None:
        self._pending_text = None
        self._save_notes = ""
        self._config = None

    def restart(self) -> None:
        """Tell the running daemon to reload (SIGHUP); fine when it is not running.

        After ``certonly -i elemta`` (where certbot calls only this method) the
        certificate just saved is installed into the cache first.
        """
        if not self._installed and getattr(self.config, "verb", None) == "certonly":
            self._install_saved_lineage()
        pid_file = self.elemta.server.pid_file
        outcome, pid = daemon.reload_daemon(pid_file)
        if outcome is daemon.Reload.SIGNALLED:
            state = f"the daemon (pid {pid}) was told to reload (SIGHUP)"
        elif outcome is daemon.Reload.NOT_RUNNING:
            state = f"elemta is not running (no {pid_file}); it serves it when it starts"
        else:
            state = (f"elemta is not running ({pid_file} names pid {pid}, which is not an elemta "
                     "process); it serves it when it starts")
        summary = success.summary(self.elemta, self._installed_path, state)
        success.remember(summary)
        if getattr(self.config, "verb", None) != "run":  # `run` ends with it (success.py)
            display_util.notify(summary)


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` keeping its mode: temp file, fsync, rename."""
    try:
        mode = path.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise errors.PluginError(f"Could not write {path}: {exc.strerror}.") from exc
