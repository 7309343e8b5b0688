"""The daemon's server-side TLS: one prebuilt OpenSSL context per certificate,
picked per connection by SNI, swapped atomically on reload.

Twisted asks ``ServerTLS.serverConnectionForTLS`` on every handshake (implicit
TLS and STARTTLS alike), so after ``reload()`` new handshakes get the new
certificate while connections already in TLS keep theirs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import exception_from_error_queue
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer  # type: ignore[import-untyped, unused-ignore]

from elemta_smtp.certs.bundle import (
    CertificateBundle,
    dns_names,
    key_description,
    key_kind,
    parse_bundle,
    serial_hex,
    spki_sha256,
)
from elemta_smtp.certs.names import Candidate, NameTable, build_table
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError, InvalidCertificate
from elemta_smtp.tls.bootstrap import ensure_bootstrap, make_self_signed
from elemta_smtp.tls.dual import use_certificates
from elemta_smtp.tls.sources import (
    Source,
    bootstrap_source,
    configured_sources,
    log_file_warnings,
    preferred_names,
)

if TYPE_CHECKING:
    from elemta_smtp.metrics import Metrics

#: TLS 1.2 suites: forward secret (ECDHE) and AEAD only. TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
#: TLS 1.3 suites: OpenSSL's default three, AES-128-GCM first (with server preference its
#: SHA-256 key schedule and transcript hash make each handshake cheaper than SHA-384's).
TLS13_CIPHERS = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#: Key-exchange groups, for TLS 1.2 ECDHE and TLS 1.3 alike: Mozilla's "intermediate" set.
#: OpenSSL's default also offers X448 and P-521, which that profile (and sslyze's check of it)
#: does not allow; X25519 first, the cheapest.
GROUPS = b"X25519:P-256:P-384"
_OPTIONS = (SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION |  # type: ignore[attr-defined, unused-ignore]
            SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_SINGLE_ECDH_USE)


@functools.cache
def _warn_groups_unrestricted() -> None:
    """Said once per process: the group list could not be set (cryptography too old)."""
    Logger(namespace="elemta.tls").warn(
        "TLS key exchange groups cannot be restricted with this cryptography build: OpenSSL's "
        "default groups (X448 and P-521 too) are offered; upgrade cryptography")


def set_groups(ctx: SSL.Context, groups: bytes) -> bool:
    """Offer only ``groups`` (OpenSSL's names, "X25519:P-256") for key exchange; False when
    this cryptography build cannot (OpenSSL's own default groups stay). pyOpenSSL has no
    setter for a list, so this calls ``SSL_CTX_set1_curves_list`` (``SSL_CTX_set1_groups_list``
    under its older name) through cryptography's bindings."""
    setter = getattr(_lib, "SSL_CTX_set1_curves_list", None)
    if setter is None:
        return False
    if setter(ctx._context, groups) != 1:
        exception_from_error_queue(SSL.Error)
    return True


def build_context(bundle: CertificateBundle,
                  on_servername: Callable[[SSL.Connection], None] | None = None,
                  also: CertificateBundle | None = None) -> SSL.Context:
    """A server context for one certificate: TLS 1.2+, modern ciphers, no compression or
    renegotiation, server cipher preference; ``on_servername`` switches contexts by SNI.
    With ``also`` (a certificate of the other key type for the same names), both are served,
    each with its own chain: OpenSSL picks per handshake what the client can verify."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(_OPTIONS)
    ctx.set_cipher_list(TLS12_CIPHERS)
    ctx.set_tls13_ciphersuites(TLS13_CIPHERS)
    if not set_groups(ctx, GROUPS):
        _warn_groups_unrestricted()
    ctx.set_session_id(b"elemta")
    if also is not None:
        use_certificates(ctx, (also, bundle))  # the last one loaded is OpenSSL's current one
    else:
        ctx.use_certificate(bundle.leaf)  # type: ignore[arg-type, unused-ignore]
        ctx.use_privatekey(bundle.key)  # type: ignore[arg-type, unused-ignore]
        for cert in bundle.chain:
            ctx.add_extra_chain_cert(cert)  # type: ignore[arg-type, unused-ignore]
        ctx.check_privatekey()
    if on_servername is not None:
        ctx.set_tlsext_servername_callback(on_servername)
    return ctx


@dataclass(frozen=True)
class ServedCertificate:
    """A certificate being served, for logs and ``elemta cert info``."""

    names: tuple[str, ...]
    serial: int
    not_before: datetime
    not_after: datetime
    source: Path
    is_bootstrap: bool
    is_default: bool
    kind: str = "live"  # where it was read from: "live" (the cache), "hand" (cert_file), "bootstrap"
    key_type: str = ""  # "ecdsa-p256", "rsa-2048" ...
    variant: str = ""  # "rsa": live/<name>.rsa.pem, served next to live/<name>.pem
    key_kind: str = ""  # "ecdsa" | "rsa" (key_type's first word)
    spki_sha256: str = ""  # the SHA-256 of its public key, as in TLSA 3 1 1
    leaf: x509.Certificate | None = None  # for checks that need more than these facts
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


@dataclass(frozen=True)
class _Loaded:
    source: Source
    data: bytes
    bundle: CertificateBundle
    context: SSL.Context
    #: the certificate of the other key type for the same name (live/<name>.rsa.pem) and the
    #: context serving both: used instead of ``context`` while there is one
    companion: _Loaded | None = None
    pair: SSL.Context | None = None

    @property
    def serving(self) -> SSL.Context:
        return self.pair if self.pair is not None else self.context


@dataclass(frozen=True)
class _Snapshot:
    loaded: tuple[_Loaded, ...]
    table: NameTable[_Loaded]


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Reloadable, SNI-aware connection creator for the SMTPS port and STARTTLS."""

    def __init__(self, config: Config, now: Callable[[], datetime], log: Logger | None = None,
                 metrics: Metrics | None = None) -> None:
        self._config = config
        self._now = now
        self._log = log or Logger()
        self._metrics = metrics
        self._snapshot: _Snapshot | None = None

    # --- Twisted's side: called on every handshake ---

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        snapshot = self._snapshot
        if snapshot is None:
            self.reload()
            snapshot = self._snapshot
            assert snapshot is not None
        return SSL.Connection(snapshot.table.default.serving, None)

    def bundles_for(self, server_name: str | None) -> tuple[CertificateBundle, ...]:
        """The certificate a handshake for ``server_name`` (SNI; None: none sent) gets now,
        and with key_type = "ecdsa+rsa" its companion of the other key type, for a listener
        that builds contexts of its own from them (the HTTPS listener)."""
        snapshot = self._snapshot
        if snapshot is None:
            self.reload()
            snapshot = self._snapshot
            assert snapshot is not None
        entry = snapshot.table.lookup(server_name)
        if entry.companion is None:
            return (entry.bundle,)
        return (entry.bundle, entry.companion.bundle)

    def _on_servername(self, connection: SSL.Connection) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        entry = snapshot.table.lookup(name)
        if entry.serving is not connection.get_context():
            connection.set_context(entry.serving)

    # --- reload ---

    def reload(self) -> bool:
        """Re-read every source; swap in what validates, keep the previous certificate for
        what does not. Returns True if what is served changed. Never raises for bad files."""
        now = self._now()
        if self._metrics is not None:
            self._metrics.certificate_reloads.inc()
        log_file_warnings(self._config, self._log)
        old = self._snapshot
        previous = {e.source.path: e for e in old.loaded} if old else {}
        loaded: list[_Loaded] = []
        changed = False
        for source in self._sources(previous):
            entry = self._load(source, previous.get(source.path), now)
            if entry is not None:
                changed = changed or entry is not previous.get(source.path)
                loaded.append(entry)
        if not loaded:
            entry = self._load_bootstrap(previous.get(bootstrap_source(self._config).path), now)
            changed = changed or entry is not previous.get(entry.source.path)
            loaded.append(entry)
        paired = self._pair(loaded)
        changed = changed or any(a is not b for a, b in zip(paired, loaded, strict=True))
        loaded = paired
        kept = {e.source.path for e in loaded}
        for path, entry in previous.items():
            if path not in kept:
                changed = True
                if entry.source.kind != "bootstrap":
                    self._log.warn("TLS certificate {path} is gone, no longer serving serial {serial}",
                                   path=str(path), serial=serial_hex(entry.bundle.leaf))
        served_with = {id(e.companion) for e in loaded if e.companion is not None}
        table = build_table((Candidate(e, e.source.own_name, dns_names(e.bundle.leaf))
                             for e in loaded if id(e) not in served_with),
                            preferred_names(self._config))
        assert table is not None  # loaded is never empty
        self._snapshot = _Snapshot(tuple(loaded), table)  # the one atomic swap
        if old is None or table.default is not old.table.default:
            changed = True
            self._announce_default(table.default)
        return changed

    def _pair(self, loaded: list[_Loaded]) -> list[_Loaded]:
        """Give each live/<name>.pem whose live/<name>.rsa.pem loaded too one context serving
        both (kept from the last reload when neither changed); a certificate whose partner
        is gone or was rejected is served alone."""
        companions = {e.source.own_name: e for e in loaded if e.source.variant}
        result: list[_Loaded] = []
        for entry in loaded:
            partner = None if entry.source.variant else companions.get(entry.source.own_name)
            if partner is entry.companion:
                result.append(entry)
                continue
            if partner is None:
                result.append(replace(entry, companion=None, pair=None))
                continue
            try:
                pair = build_context(entry.bundle, self._on_servername, also=partner.bundle)
            except SSL.Error as exc:
                self._log.error("TLS certificates {path} and {other} cannot be served together, "
                                "serving {path} alone: OpenSSL refused them: {reason}",
                                path=str(entry.source.path), other=str(partner.source.path),
                                reason=str(exc))
                result.append(replace(entry, companion=None, pair=None))
                continue
            self._log.info("TLS certificates {path} ({key}) and {other} ({other_key}) are served "
                           "together: each client gets the one its signature algorithms allow",
                           path=str(entry.source.path), key=key_kind(entry.bundle.key),
                           other=str(partner.source.path), other_key=key_kind(partner.bundle.key))
            result.append(replace(entry, companion=partner, pair=pair))
        return result

    def _load(self, source: Source, prev: _Loaded | None, now: datetime) -> _Loaded | None:
        try:
            data = source.read()
            bundle = source.load(data, now)
            if prev is not None and prev.data == data:
                return prev
            context = build_context(bundle, self._on_servername)
        except InvalidCertificate as exc:
            self._reject(source, prev, exc.reason)
            return prev
        except SSL.Error as exc:
            self._reject(source, prev, f"OpenSSL refused it: {exc}")
            return prev
        self._log.info("TLS certificate loaded from {path}: serial {serial}, names {names}, "
                       "valid until {not_after}", path=str(source.path),
                       serial=serial_hex(bundle.leaf), names=",".join(dns_names(bundle.leaf)),
                       not_after=bundle.leaf.not_valid_after_utc.isoformat())
        return _Loaded(source, data, bundle, context)

    def _reject(self, source: Source, prev: _Loaded | None, reason: str) -> None:
        if self._metrics is not None:
            from elemta_smtp.metrics import rejection_reason  # noqa: PLC0415  (with metrics only)

            self._metrics.certificate_rejected.labels(rejection_reason(reason)).inc()
        if prev is None:
            self._log.error("TLS certificate {path} rejected, not served: {reason}",
                            path=str(source.path), reason=reason)
        else:
            self._log.error("TLS certificate {path} rejected, still serving serial {serial}: {reason}",
                            path=str(source.path), serial=serial_hex(prev.bundle.leaf), reason=reason)

    def _load_bootstrap(self, prev: _Loaded | None, now: datetime) -> _Loaded:
        hostname = self._config.server.hostname
        source = bootstrap_source(self._config)
        try:
            ensure_bootstrap(self._config.tls.letsencrypt.cache_dir, hostname, now)
            entry = self._load(source, prev, now)
            if entry is not None:
                return entry
        except CacheError as exc:
            self._log.error("cannot store the bootstrap certificate: {error}; using one kept in memory",
                            error=str(exc))
        if prev is not None:
            return prev
        bundle = parse_bundle(make_self_signed(hostname, now), source.path)
        return _Loaded(source, b"", bundle, build_context(bundle, self._on_servername))

    def _announce_default(self, entry: _Loaded) -> None:
        if entry.source.kind == "bootstrap":
            le = self._config.tls.letsencrypt
            if le.enabled:
                todo = (f"elemta is obtaining a certificate for {le.domain} from "
                        f"{le.acme_directory}; this ends when it is served (if it does not, run "
                        "`elemta cert test`).")
            elif self._config.path is None:  # `elemta serve --dev`: no file to edit
                todo = ("That is what --dev does (no domain, no internet); for a real "
                        "certificate run elemta with a config file (-c elemta.toml).")
            else:
                todo = ("Enable [tls.letsencrypt] or set [tls] cert_file/key_file, then reload "
                        "(SIGHUP).")
            self._log.warn(
                "SERVING A SELF-SIGNED BOOTSTRAP CERTIFICATE for {hostname} ({path}): it is NOT publicly "
                "trusted, so mail servers and clients that verify TLS will refuse it. {todo}",
                hostname=self._config.server.hostname, path=str(entry.source.path), todo=todo)
        else:
            self._log.info("TLS default certificate: {path} (serial {serial})",
                           path=str(entry.source.path), serial=serial_hex(entry.bundle.leaf))

    def _sources(self, previous: dict[Path, _Loaded]) -> list[Source]:
        try:
            return configured_sources(self._config)
        except CacheError as exc:
            self._log.error("cannot list the certificate cache, keeping its certificates: {error}",
                            error=str(exc))
            tls = self._config.tls
            hand = [Source("hand", tls.cert_file, tls.key_file)] if tls.cert_file is not None else []
            return hand + [e.source for e in previous.values() if e.source.kind == "live"]

    def served(self) -> list[ServedCertificate]:
        """What is served now, default first flagged ``is_default``."""
        snapshot = self._snapshot
        if snapshot is None:
            return []
        return [ServedCertificate(names=dns_names(e.bundle.leaf), serial=e.bundle.leaf.serial_number,
                                  not_before=e.bundle.leaf.not_valid_before_utc,
                                  not_after=e.bundle.leaf.not_valid_after_utc, source=e.source.path,
                                  is_bootstrap=e.source.kind == "bootstrap",
                                  is_default=e is snapshot.table.default, kind=e.source.kind,
                                  key_type=key_label(e.bundle.key),
                                  variant=e.source.variant, key_kind=key_kind(e.bundle.key),
                                  spki_sha256=spki_sha256(e.bundle.leaf), leaf=e.bundle.leaf,
                                  chain=tuple(e.bundle.chain))
                for e in snapshot.loaded]


def key_label(key: object) -> str:
    """The served key in a metric label's words: ``ecdsa-p256``, ``rsa-2048`` (from
    ``key_description``'s "ECDSA P-256", "RSA 2048")."""
    return key_description(key).lower().replace(" ", "-").replace("p-", "p")
