"""The certbot plugin ``elemta``: installer and HTTP-01 / TLS-ALPN-01 authenticator for
the elemta SMTP server.

Everything it knows about elemta comes from elemta.toml (``--elemta-config``);
everything it gives elemta goes through the certificate cache
(``live/<name>.pem``, ``webroot/``, ``tls-alpn-01/``) and one SIGHUP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acme import challenges
from certbot import achallenges, configuration, errors, interfaces
from certbot.crypto_util import get_names_from_cert
from certbot.display import util as display_util
from certbot.plugins import common

from certbot_elemta._internal import cluster, constants, success, tomledit
from certbot_elemta._internal.http01 import HTTP01Responder
from certbot_elemta._internal.lineage import find_lineage
from certbot_elemta._internal.tlsalpn01 import TLSALPN01, TLSALPN01Responder
from elemta_smtp import daemon
from elemta_smtp.cache import layout, lineages, live
from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.config import Config, ConfigError, config_path, load_config
from elemta_smtp.errors import CacheError, WriteError

logger = logging.getLogger(__name__)


def _problems(error: ConfigError) -> str:
    return "\n".join(f"  {p}" for p in error.problems)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.PluginError(f"Could not read the {what} {path}: {exc.strerror}.") from exc


@dataclass(frozen=True)
class _Install:
    """A certificate certbot handed over, checked, waiting for ``restart`` to install it."""

    name: str
    key_pem: bytes
    fullchain_pem: bytes
    lineage: lineages.Lineage | None  # None: plain files, not a certbot lineage
    variant: str = ""  # "rsa": live/<name>.rsa.pem, the RSA certificate of key_type "ecdsa+rsa"


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
        self._pending: dict[str, _Install] = {}  # by name, installed by restart()
        self._installed = False  # did this run write a certificate into the cache?
        self._installed_path: Path | None = None
        self._http01: HTTP01Responder | None = None
        self._tlsalpn01: TLSALPN01Responder | None = None

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
        """[tls.letsencrypt] challenge first; TLS-ALPN-01 only when configured or asked for
        (``--preferred-challenges tls-alpn-01``)."""
        if self.elemta.tls.letsencrypt.challenge == TLSALPN01.typ:
            return [TLSALPN01, challenges.HTTP01]
        if TLSALPN01.typ in (getattr(self.config, "pref_challs", None) or []):
            return [challenges.HTTP01, TLSALPN01]
        return [challenges.HTTP01]

    def perform(self, achalls: Sequence[achallenges.AnnotatedChallenge]
                ) -> list[challenges.ChallengeResponse]:
        """Answer each challenge with its responder; the responses in the order asked."""
        le = self.elemta.tls.letsencrypt
        alpn = [a for a in achalls if a.chall.typ == TLSALPN01.typ]
        http = [a for a in achalls if a.chall.typ != TLSALPN01.typ]
        responses: dict[achallenges.AnnotatedChallenge, challenges.ChallengeResponse] = {}
        if http:
            if self._http01 is None:
                self._http01 = HTTP01Responder(le.cache_dir, le.http_addr,
                                               shared=cluster.shared_store(self.elemta))
            responses.update(zip(http, self._http01.perform(http), strict=True))
        if alpn:
            if self._tlsalpn01 is None:
                self._tlsalpn01 = TLSALPN01Responder(le.cache_dir, le.https_addr,
                                                     shared=cluster.shared_store(self.elemta))
            responses.update(zip(alpn, self._tlsalpn01.perform(alpn), strict=True))
        return [responses[a] for a in achalls]

    def cleanup(self, achalls: Sequence[achallenges.AnnotatedChallenge]) -> None:
        if self._http01 is not None:
            self._http01.cleanup(achalls)
        if self._tlsalpn01 is not None:
            self._tlsalpn01.cleanup(achalls)

    def auth_hint(self, failed_achalls: list[achallenges.AnnotatedChallenge]) -> str:
        le = self.elemta.tls.letsencrypt
        if any(a.chall.typ == TLSALPN01.typ for a in failed_achalls):
            return ("The Certificate Authority could not complete the TLS-ALPN-01 handshake with "
                    f"https://<domain>:443, answered by elemta on "
                    f"{le.https_addr or '(nothing: https_addr is empty)'} from "
                    f"{layout.tls_alpn_dir(le.cache_dir)}. Check that the domain's DNS points to "
                    "this machine and that port 443 reaches that address (firewall, NAT, "
                    "another web server in front).")
        return ("The Certificate Authority could not download the challenge answers from "
                f"http://<domain>/.well-known/acme-challenge/, served by elemta on "
                f"{le.http_addr or '(nothing: http_addr is empty)'} from "
                f"{layout.challenge_dir(le.cache_dir)}. Check that the domain's DNS points to "
                "this machine and that port 80 reaches that address (firewall, NAT).")

    # --- installer ---------------------------------------------------------

    def get_all_names(self) -> set[str]:
        return {*self.elemta.tls.letsencrypt.names, self.elemta.server.hostname}

    # Every way in installs through one path: deploy_cert (run, install) and renew_deploy
    # (renew) check the certificate and queue it; restart() (called last in every flow, and
    # the only method certonly -i calls: it queues the lineage just saved) installs it into
    # the cache with its lineage record and the renewal warning, then reloads the daemon.

    def deploy_cert(self, domain: str, cert_path: str, key_path: str,
                    chain_path: str, fullchain_path: str) -> None:
        """Queue key + full chain for ``live/<primary name>.pem`` (``restart`` writes it).

        certbot calls this once per domain of the certificate; it is written once.
        """
        cert_pem = _read(cert_path, "certificate")
        name = self._primary(get_names_from_cert(cert_pem)) or domain
        self._queue(name, key_path, fullchain_path, self._lineage_of(cert_path))
        self._plan_config(name)

    def renew_deploy(self, lineage: interfaces.RenewableCert, *args: object, **kwargs: object) -> None:
        """After ``certbot renew``: queue the renewed certificate (``restart`` writes it)."""
        self._queue(self._primary(lineage.names()) or lineage.names()[0], lineage.key_path,
                    lineage.fullchain_path, self._lineage(lineage.lineagename))

    def _primary(self, names: Sequence[str]) -> str | None:
        """The name a certificate is installed under (``live/<name>.pem``): elemta's domain
        when the certificate covers it (a certificate for several names, whatever order
        the CA put them in), else its first name."""
        domain = self.elemta.tls.letsencrypt.domain
        if any(n.lower() == domain for n in names):
            return domain
        return names[0] if names else None

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

    def _queue(self, name: str, key_path: str, fullchain_path: str,
               lineage: lineages.Lineage | None) -> None:
        """Read and check a certificate now (a bad one stops certbot before any edit), and
        queue it for ``restart``."""
        key_pem = _read(key_path, "private key")
        fullchain_pem = _read(fullchain_path, "certificate chain")
        cache_dir = self.elemta.tls.letsencrypt.cache_dir
        variant = live.variant_for(self.elemta.tls.letsencrypt.key_types, key_pem)
        try:
            live.check_certificate(cache_dir, name, key_pem, fullchain_pem, variant)
        except CacheError as exc:
            raise errors.PluginError(
                f"Could not install the certificate for {name} into elemta's cache "
                f"{cache_dir}: {exc}") from exc
        self._pending[f"{name}.{variant}"] = _Install(name, key_pem, fullchain_pem, lineage,
                                                      variant)

    def _install(self, install: _Install) -> None:
        """Write the certificate, its lineage record, and say when the daemon cannot renew it."""
        name, lineage, variant = install.name, install.lineage, install.variant
        cache_dir = self.elemta.tls.letsencrypt.cache_dir
        self._publish(install)
        try:
            path = live.write_certificate(cache_dir, name, install.key_pem, install.fullchain_pem,
                                          variant)
            if lineage is None:
                lineages.forget_record(cache_dir, name, variant)
            else:
                lineages.write_record(cache_dir, name, lineage, variant)
        except (CacheError, OSError) as exc:
            raise errors.PluginError(
                f"Could not install the certificate for {name} into elemta's cache "
                f"{cache_dir}: {exc}") from exc
        self._installed = True
        self._installed_path = path
        display_util.notify(f"Installed the certificate for {name} into elemta: {path}")
        self._warn_renewal(lineage)

    def _publish(self, install: _Install) -> None:
        """In a cluster, publish the certificate for every host first (under the daemon's
        lease when the daemon runs this certbot); nothing is installed if that fails."""
        store = cluster.shared_store(self.elemta)
        if store is None:
            return
        cache_dir = self.elemta.tls.letsencrypt.cache_dir
        try:
            _path, pem = live.check_certificate(cache_dir, install.name, install.key_pem,
                                                install.fullchain_pem)
            serial = live.serial_of(pem)
            fence = cluster.publish(store, install.name, pem, serial)
        except CacheError as exc:
            raise errors.PluginError(f"Could not publish the certificate for {install.name}: "
                                     f"{exc}") from exc
        finally:
            store.close()
        display_util.notify(f"Published the certificate for {install.name} (serial {serial}) "
                            f"to the cluster's Redis at {store.where} (fencing token {fence}): "
                            "every elemta host installs it within seconds.")

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

    def _queue_saved_lineage(self) -> None:
        domains = [getattr(d, "dns_name", str(d)) for d in (self.config.domains or [])]
        found = find_lineage(Path(self.config.live_dir), self.config.certname, domains)
        if found is None:
            raise errors.PluginError(
                "certbot saved a certificate but the elemta installer could not find it under "
                f"{self.config.live_dir} (cert name {self.config.certname!r}, domains "
                f"{', '.join(domains) or 'none'}). Install it with 'certbot install --cert-name "
                "NAME -i elemta'.")
        self._queue(self._primary(found.names) or found.name, str(found.key_path),
                    str(found.fullchain_path), self._lineage(found.cert_name))

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
        _write_keeping_mode(self.config_file, self._pending_text)
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
        """Install what deploy_cert/renew_deploy queued, then tell the running daemon to
        reload (SIGHUP); fine when it is not running. When this certbot is the daemon's own
        child (``daemon.DAEMON_PID_ENV``), no signal: the daemon reloads when certbot ends.

        After ``certonly -i elemta`` (where certbot calls only this method) the
        certificate just saved is found and installed first.
        """
        if not self._installed and not self._pending and \
                getattr(self.config, "verb", None) == "certonly":
            self._queue_saved_lineage()
        pending, self._pending = list(self._pending.values()), {}
        for install in pending:
            self._install(install)
        pid_file = self.elemta.server.pid_file
        try:
            outcome, pid = daemon.reload_daemon(pid_file)
        except daemon.PidFileUnreadable as exc:
            raise errors.PluginError(
                f"Could not read elemta's pid file {pid_file}: {exc.strerror}. "
                "Run certbot as root or as the user elemta runs as.") from exc
        except daemon.SignalRefused as exc:
            raise errors.PluginError(
                f"Could not signal the elemta daemon (pid {exc.pid} from {pid_file}): permission "
                "denied. Run certbot as root or as the user elemta runs as, or reload it "
                f"yourself with 'kill -HUP {exc.pid}'.") from exc
        if outcome is daemon.Reload.SIGNALLED:
            state = f"the daemon (pid {pid}) was told to reload (SIGHUP)"
        elif outcome is daemon.Reload.RELOADS_ITSELF:
            state = f"the daemon (pid {pid}) runs this certbot and reloads when it ends"
        elif outcome is daemon.Reload.NOT_RUNNING:
            state = f"elemta is not running (no {pid_file}); it serves it when it starts"
        else:
            state = (f"elemta is not running ({pid_file} names pid {pid}, which is not an elemta "
                     "process); it serves it when it starts")
        summary = success.summary(self.elemta, self._installed_path, state)
        success.remember(summary)
        if getattr(self.config, "verb", None) != "run":  # `run` ends with it (success.py)
            display_util.notify(summary)


def _write_keeping_mode(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (``cache.atomic``), keeping its mode and owner."""
    try:
        info = path.stat()
        atomic_write(path, text.encode("utf-8"), mode=info.st_mode & 0o7777,
                     owner=(info.st_uid, info.st_gid))
    except OSError as exc:
        raise errors.PluginError(f"Could not write {path}: {exc.strerror}.") from exc
    except WriteError as exc:
        raise errors.PluginError(f"Could not write {path}: {exc.strerror}.") from exc
