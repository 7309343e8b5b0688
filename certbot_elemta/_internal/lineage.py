"""Finding the lineage ``certbot certonly`` just saved.

``certonly -i elemta`` calls only the installer's ``restart`` (never
``deploy_cert``), yet elemta's first start relies on exactly that command to
put the certificate in its cache. So ``restart`` looks the lineage up in
certbot's ``live/`` directory: by ``--cert-name`` when given, else the newest
lineage whose names are exactly the requested domains.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from certbot.crypto_util import get_names_from_cert


@dataclass(frozen=True)
class Lineage:
    """The files of one certbot lineage, as the installer needs them."""

    name: str                # the certificate's primary name
    key_path: Path
    fullchain_path: Path
    cert_name: str           # certbot's name of the lineage (its live/ folder)
    names: tuple[str, ...] = ()  # every name of the certificate


def _names(cert_path: Path) -> list[str]:
    try:
        return list(get_names_from_cert(cert_path.read_bytes()))
    except (OSError, ValueError):
        return []


def find_lineage(live_dir: Path, certname: str | None, domains: Iterable[str]) -> Lineage | None:
    """The lineage under ``live_dir`` named ``certname``, or else the newest one
    whose certificate names equal ``domains``; None when there is none."""
    wanted = {d.lower() for d in domains}
    candidates: list[tuple[float, Path, list[str]]] = []
    try:
        entries = sorted(live_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        cert = entry / "cert.pem"
        if not cert.is_file():
            continue
        names = _names(cert)
        if not names:
            continue
        if certname is not None:
            if entry.name == certname:
                candidates.append((0.0, entry, names))
        elif wanted and {n.lower() for n in names} == wanted:
            candidates.append((cert.stat().st_mtime, entry, names))
    if not candidates:
        return None
    _, entry, names = max(candidates, key=lambda c: c[0])
    return Lineage(names[0], entry / "privkey.pem", entry / "fullchain.pem", entry.name,
                   tuple(names))
