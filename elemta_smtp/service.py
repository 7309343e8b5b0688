"""Builds the running daemon from a ``Config``: listeners, TLS, delivery, the
HTTP-01 site, certificate management, the pid file, SIGHUP and graceful stop."""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Generator
from datetime import datetime, timezone
from typing import Any, Protocol, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime
from twisted.logger import Logger

from elemta_smtp.acme.http01 import http01_site
from elemta_smtp.acme.https import https_factory, https_wanted
from elemta_smtp.acme.manager import CertManager
from elemta_smtp.acme.wiring import DaemonReactor, build_managers
from elemta_smtp.cache import layout
from elemta_smtp.cache.challenges import MAX_CONNECTIONS as HTTP_MAX_CONNECTIONS
from elemta_smtp.cluster.node import ClusterNode
from elemta_smtp.config import Config
from elemta_smtp.daemon import (
    DEV_PID_FILE_ADVICE,
    PID_FILE_ADVICE,
    check_pid_file,
    remove_pid_file,
    write_pid_file,
)
from elemta_smtp.errors import CacheError, ElemtaError
from elemta_smtp.metrics import Metrics
from elemta_smtp.monitor.collector import StateCollector
from elemta_smtp.monitor.health import Health, ListenerState, check_health
from elemta_smtp.monitor.site import monitor_site
from elemta_smtp.net import descriptors
from elemta_smtp.smtp.listener import SMTPServer
from elemta_smtp.smtp.maildir import MaildirReactor, MaildirSink
from elemta_smtp.smtp.session import SessionSettings
from elemta_smtp.tls.context import ServerTLS
from elemta_smtp.units import NO_IPV6, Address, bind_hosts, listen_failure

log = Logger(namespace="elemta")


class StartupError(ElemtaError):
    """The daemon cannot start; the message says why and what to do."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def is_dev(config: Config) -> bool:
    """Is this ``elemta serve --dev``'s embedded config (no file behind it)? Its errors then
    speak of ``--data-dir`` and the fixed ports, not of config keys it has no file for."""
    return config.path is None


def listen_error(what: str, address: Address, exc: CannotListenError, dev: bool = False) -> StartupError:
    """Turn a failed bind into a sentence an admin can act on (``units.listen_failure``)."""
    text = listen_failure(what, address, exc.socketError)
    code = getattr(exc.socketError, "errno", None)
    if code == errno.EADDRINUSE and dev:
        text += ("; `elemta serve --dev` always uses 127.0.0.1:2525, 4465 and 8080: stop "
                 "the other program (another `elemta serve --dev`?) first")
    elif code == errno.EACCES:
        text += " (packaging/elemta.service grants it)"
    return StartupError(text)


#: Each listener's short name, in /healthz and the ``listener`` label of ``elemta_listener_up``.
LISTENER_NAMES = {"SMTP": "smtp", "SMTPS (implicit TLS)": "smtps", "HTTP-01": "http-01",
                  "HTTPS (TLS-ALPN-01, MTA-STS)": "https", "metrics": "metrics"}


class ServiceReactor(DaemonReactor, MaildirReactor, Protocol):
    """Every reactor interface the daemon uses; the real reactor provides them all."""

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50,
                  interface: str = "") -> IListeningPort: ...


class ElemtaService(MultiService):
    """The whole daemon. Ports are bound in ``privilegedStartService``."""

    def __init__(self, config: Config, reactor: ServiceReactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.dev = is_dev(config)
        self._pid_advice = DEV_PID_FILE_ADVICE if self.dev else PID_FILE_ADVICE
        # Before anything is written: a second daemon must leave the first one's files alone.
        check_pid_file(config.server.pid_file, os.getpid(), self._pid_advice)
        self.open_at_start = 0  # descriptors open once the listeners are bound
        self.listening: list[tuple[str, IListeningPort]] = []  # (short name, port) as bound
        self.stopping = False
        # [metrics] on: the components count into this; off: None, and nothing is counted
        self.metrics = Metrics() if config.metrics.listen_addr is not None else None
        cache_dir = config.tls.letsencrypt.cache_dir
        try:
            if self.dev:  # the --data-dir, created here so a failure is worded for --dev
                cache_dir.parent.mkdir(parents=True, exist_ok=True)
            layout.ensure_layout(cache_dir)
        except OSError as exc:
            todo = "use another --data-dir" if self.dev else "create it or set [tls.letsencrypt] cache_dir"
            raise StartupError(f"cannot create the cache directory {cache_dir}: {exc.strerror}; "
                               f"{todo}") from None
        except CacheError as exc:
            raise StartupError(f"cannot use the cache directory {cache_dir}: {exc}") from None
        self.tls: ServerTLS | None = None
        if config.tls.enabled:
            self.tls = ServerTLS(config, _now, metrics=self.metrics)
            self.tls.reload()
        self.sink = MaildirSink(config.delivery.maildir_root, config.server.hostname, reactor)
        starttls = self.tls is not None and config.tls.enable_starttls
        settings = session_settings(config, starttls_available=starttls)
        self.smtp = SMTPServer(settings, self.sink, self.tls, IReactorTime(reactor),
                               metrics=self.metrics)
        self.cluster: ClusterNode | None = None
        if config.cluster.enabled:
            try:
                self.cluster = ClusterNode(config, reactor, IReactorTime(reactor), now=_now,
                                           installed=self._cluster_installed)
            except CacheError as exc:  # the password file
                raise StartupError(str(exc)) from None
            self.cluster.setServiceParent(self)
        self.managers: list[CertManager] = []  # one per certificate: key_type "ecdsa+rsa" has two
        if config.tls.letsencrypt.enabled and self.tls is not None:
            self.managers = build_managers(config, self.tls, reactor, self.cluster, self.metrics)
            for manager in self.managers:
                manager.setServiceParent(self)
                if self.cluster is not None:
                    self.cluster.link.on_back.append(manager.check)
        self.manager: CertManager | None = self.managers[0] if self.managers else None
        if self.metrics is not None:
            served = self.tls.served if self.tls is not None else list
            link = self.cluster.link if self.cluster is not None else None
            self.metrics.registry.register(StateCollector(
                served, self.listener_states, self.health, _now,
                redis_up=(lambda: link.up) if link is not None else None))

    def _listeners(self) -> list[tuple[str, Address, IProtocolFactory]]:
        config = self.config
        found: list[tuple[str, Address, IProtocolFactory]] = []
        if config.server.listen_addr is not None:
            found.append(("SMTP", config.server.listen_addr, self.smtp.plain_factory()))
        if self.tls is not None and config.tls.listen_addr is not None:
            found.append(("SMTPS (implicit TLS)", config.tls.listen_addr,
                          self.smtp.implicit_tls_factory()))
        http_addr = config.tls.letsencrypt.http_addr
        if http_addr is not None:
            shared = self.cluster.challenge_answer if self.cluster is not None else None
            site = http01_site(layout.webroot(config.tls.letsencrypt.cache_dir),
                               IReactorTime(self.reactor), self.http_connection_cap,
                               shared=shared, metrics=self.metrics)
            found.append(("HTTP-01", http_addr, site))
        https_addr = config.tls.letsencrypt.https_addr
        if https_wanted(config) and self.tls is not None and https_addr is not None:
            factory = https_factory(config, self.tls,
                                    layout.tls_alpn_dir(config.tls.letsencrypt.cache_dir),
                                    reactor=IReactorTime(self.reactor),
                                    max_connections=self.http_connection_cap,
                                    metrics=self.metrics)
            found.append(("HTTPS (TLS-ALPN-01, MTA-STS)", https_addr, factory))
        if self.metrics is not None and config.metrics.listen_addr is not None:
            site = monitor_site(self.metrics.registry, self.health, IReactorTime(self.reactor),
                                max_connections=self.http_connection_cap)
            found.append(("metrics", config.metrics.listen_addr, site))
        return found

    def _http_listeners(self) -> int:
        """How many HTTP listeners (HTTP-01, HTTPS, metrics) share the descriptors left
        after SMTP's reserve."""
        return ((self.config.tls.letsencrypt.http_addr is not None)
                + (self.tls is not None and https_wanted(self.config))
                + (self.metrics is not None and self.config.metrics.listen_addr is not None))

    # --- monitoring: /healthz and the scrape-time gauges ---

    def listener_states(self) -> list[ListenerState]:
        """Every listener bound at start, and whether it still listens."""
        states = []
        for name, port in self.listening:
            host = port.getHost()
            ip = str(getattr(host, "host", "?"))
            address = f"[{ip}]:{getattr(host, 'port', '?')}" if ":" in ip else \
                f"{ip}:{getattr(host, 'port', '?')}"
            states.append(ListenerState(name, address, bool(getattr(port, "connected", True))))
        return states

    def health(self) -> Health:
        """What ``GET /healthz`` answers now (``monitor.health.check_health``)."""
        tls = self.tls
        return check_health(self.listener_states(), tls.served() if tls is not None else [],
                            self.config.tls.letsencrypt.domain if tls is not None else None,
                            _now(), stopping=self.stopping)

    def privilegedStartService(self) -> None:
        check_pid_file(self.config.server.pid_file, os.getpid(), self._pid_advice)
        for what, address, factory in self._listeners():
            port = self._listen(what, address, factory)
            self.ports.append(port)
            self.listening.append((LISTENER_NAMES.get(what, what.lower()), port))
            host = port.getHost()
            log.info("listening for {what} on {host}:{port}", what=what,
                     host=getattr(host, "host", "?"), port=getattr(host, "port", "?"))
        self.open_at_start = descriptors.open_descriptors()
        if self._http_listeners():
            self._check_http_budget()
        super().privilegedStartService()

    def http_connection_cap(self) -> int:
        """Connections one HTTP listener (HTTP-01, HTTPS, metrics) may have open at once now
        (asked at each accept): the listener's own cap, lowered so that SMTP's reserve of
        descriptors stays free; the listeners share what is left evenly, so a flood on one
        never starves another."""
        listeners = max(1, self._http_listeners())
        return descriptors.http_connection_cap(
            descriptors.open_files_limit(), self.open_at_start,
            self.config.server.max_connections, HTTP_MAX_CONNECTIONS * listeners) // listeners

    def _check_http_budget(self) -> None:
        """Say at start when the open-files limit squeezes the HTTP-01 listener."""
        cap = self.http_connection_cap()
        if cap >= HTTP_MAX_CONNECTIONS:
            return
        limit = descriptors.open_files_limit()
        needed = descriptors.needed_limit(self.open_at_start, self.config.server.max_connections,
                                          HTTP_MAX_CONNECTIONS * max(1, self._http_listeners()))
        fields = {"limit": limit, "open": self.open_at_start, "needed": needed,
                  "smtp": self.config.server.max_connections,
                  "other": descriptors.OTHER_DESCRIPTORS, "cap": cap}
        todo = ("raise the limit (LimitNOFILE= in the systemd unit, `ulimit -n` in a shell) "
                "to {needed} or more, or lower [server] max_connections")
        if cap == 0:
            log.error("the open-files limit ({limit}) leaves no descriptors for the HTTP-01 "
                      "listener after {open} open at start and {smtp} + {other} kept for SMTP: "
                      "it will refuse every connection, so HTTP-01 challenges fail; " + todo,
                      **fields)
        else:
            log.warn("the open-files limit ({limit}) allows only {cap} HTTP-01 connections at "
                     "once after {open} open at start and {smtp} + {other} kept for SMTP; "
                     + todo, **fields)

    def _listen(self, what: str, address: Address, factory: IProtocolFactory) -> IListeningPort:
        hosts = bind_hosts(address)
        for host in hosts:
            try:
                port: IListeningPort = self.reactor.listenTCP(address.port, factory, backlog=511,
                                                              interface=host)
                return port
            except CannotListenError as exc:
                code = getattr(exc.socketError, "errno", None)
                if host != hosts[-1] and code in NO_IPV6:
                    continue  # no IPv6 on this machine: every IPv4 address instead
                for bound in self.ports:
                    bound.stopListening()
                raise listen_error(what, address, exc, self.dev) from None
        raise AssertionError("bind_hosts() is never empty")

    def startService(self) -> None:
        write_pid_file(self.config.server.pid_file, os.getpid(), self._pid_advice)
        super().startService()
        log.info("elemta ready (pid {pid}, config {path})", pid=os.getpid(),
                 path=self.config.path or "embedded")

    def reload(self) -> None:
        """SIGHUP: re-read every certificate; then let the manager look at it."""
        log.info("SIGHUP: reloading certificates")
        if self.tls is not None:
            self.tls.reload()
        for manager in self.managers:
            manager.after_reload()

    def _cluster_installed(self) -> None:
        """Another node's certificate was installed into live/: serve it, then let the
        manager look at it (notices), as after SIGHUP."""
        if self.tls is not None:
            self.tls.reload()
        for manager in self.managers:
            manager.after_reload()

    @inlineCallbacks
    def stopService(self) -> Generator[Deferred[Any], Any, None]:
        log.info("stopping: no new connections; letting messages in flight finish "
                 "(up to {timeout:g}s)", timeout=self.config.server.shutdown_timeout)
        self.stopping = True
        yield Deferred.fromCoroutine(self._stop_listening())
        yield self.smtp.shutdown(self.config.server.shutdown_timeout)
        yield super().stopService()
        stop_sink = getattr(self.sink, "stop", None)
        if callable(stop_sink):
            yield stop_sink()
        remove_pid_file(self.config.server.pid_file, os.getpid())
        log.info("stopped")

    async def _stop_listening(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            result = port.stopListening()
            if isinstance(result, Deferred):
                await result


def install_signal_handlers(service: ElemtaService, reactor: ServiceReactor) -> None:
    """SIGHUP reloads certificates. SIGINT and SIGTERM stop the reactor, which runs
    ``stopService`` (graceful) before the process exits. Twisted installs its SIGINT
    handler only over Python's default one; a daemon started in the background by a
    shell script inherits SIGINT *ignored*, so it is installed here, whatever was there."""

    def on_hup(signum: int, frame: object) -> None:
        reactor.callFromThread(service.reload)

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGINT, cast(Any, reactor).sigInt)


def session_settings(config: Config, starttls_available: bool) -> SessionSettings:
    """The SMTP session's settings from ``config``; ``starttls_available`` says whether a TLS
    certificate can be offered on the plain port."""
    server, delivery = config.server, config.delivery
    return SessionSettings(
        hostname=server.hostname,
        max_message_size=server.max_message_size,
        max_recipients=server.max_recipients,
        max_errors=server.max_errors,
        idle_timeout=server.idle_timeout,
        local_domains=frozenset(delivery.local_domains),
        local_users=frozenset(delivery.local_users),
        bare_newline=delivery.bare_newline,
        starttls_available=starttls_available,
        max_connections=server.max_connections,
    )
