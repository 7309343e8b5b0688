"""Where served certificates come from, in priority order, and which one is the default.

Shared by the daemon (context.py) and ``elemta cert info`` (info.py), so both
agree on what is served. No Twisted, no OpenSSL contexts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from elemta_smtp.config import Config
from elemta_smtp.tls.bundle import CertificateBundle, parse_bundle
from elemta_smtp.tls.store import bootstrap_path, list_live, read_bytes
from elemta_smtp.tls.validate import check_bundle

Kind = Literal["hand", "live", "bootstrap"]


@dataclass(frozen=True)
class Source:
    """One certificate file the daemon serves from.

    ``own_name`` is the <name> of live/<name>.pem, which the certificate must cover.
    """

    kind: Kind
    path: Path
    key_path: Path | None = None
    own_name: str | None = None

    def read(self) -> bytes:
        """The file's bytes (key file first for a hand-managed pair); raises InvalidCertificate."""
        return read_bytes(self.path, self.key_path)

    def load(self, data: bytes, now: datetime) -> CertificateBundle:
        """Parse and validate ``data`` read from this source; raises InvalidCertificate."""
        bundle = parse_bundle(data, self.path)
        check_bundle(bundle, now=now, required_name=self.own_name)
        return bundle


def configured_sources(config: Config) -> list[Source]:
    """The hand-managed [tls] cert_file/key_file first (if set), then live/*.pem by name."""
    sources: list[Source] = []
    tls = config.tls
    if tls.cert_file is not None:
        sources.append(Source("hand", tls.cert_file, tls.key_file))
    for path in list_live(tls.letsencrypt.cache_dir):
        sources.append(Source("live", path, own_name=path.name[: -len(".pem")]))
    return sources


def bootstrap_source(config: Config) -> Source:
    """The self-signed fallback, used only when no other source is servable."""
    return Source("bootstrap", bootstrap_path(config.tls.letsencrypt.cache_dir))


def preferred_names(config: Config) -> tuple[str, ...]:
    """The names whose certificate is the default (no SNI or an unknown name)."""
    return tuple(dict.fromkeys((config.tls.letsencrypt.domain, config.server.hostname)))
