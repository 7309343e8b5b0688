"""Renewing a certbot lineage with a key made beforehand (the next key of a staged TLSA
rollover), for ``elemta dane rollover finish``.

certbot has no "renew with this key" option, and ``certbot certonly --csr`` writes no
lineage (its renewals would stop). What certbot does have is ``--reuse-key``: a renewal
then asks for a certificate for the key in the lineage's ``live/<name>/privkey.pem``. So
the lineage's current private key file (the archive file that link points to) is made the
next key right before a forced ``--reuse-key`` renewal (``--key-type`` of the next key, so
certbot's checks of a reused key agree), and the original bytes are put back afterwards,
whatever certbot did: the archive keeps each certificate with its own key, and certbot
stores the renewed certificate with a copy of the next key as its new version. The cache
file elemta serves is untouched until the elemta installer installs the new certificate.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.cache.lineages import Lineage
from elemta_smtp.errors import ElemtaError


class RolloverError(ElemtaError):
    """The lineage's key cannot be swapped; the message says why and what to do."""


def key_file(lineage: Lineage) -> Path:
    """The file certbot reads as the lineage's current key: what ``live/<name>/privkey.pem``
    links to, inside the lineage's ``archive/<name>/``."""
    link = lineage.config_dir / "live" / lineage.cert_name / "privkey.pem"
    try:
        real = link.resolve(strict=True)
        archive = (lineage.config_dir / "archive" / lineage.cert_name).resolve(strict=True)
    except OSError as exc:
        raise RolloverError(f"certbot's lineage {lineage.cert_name} in {lineage.config_dir} has no "
                            f"readable key ({link}: {exc.strerror or exc}); renew it once with "
                            "`elemta cert renew`, then finish the rollover") from None
    if real.parent != archive or not real.is_file():
        raise RolloverError(f"{link} does not point into {archive} (it points to {real}): this is "
                            "not a lineage certbot manages; renew it with certbot first")
    return real


@contextmanager
def next_key_in_lineage(lineage: Lineage, key_pem: bytes) -> Iterator[Path]:
    """While the block runs, the lineage's current key file holds ``key_pem`` (same mode and
    owner); afterwards it holds its own key again, also when the block raises."""
    path = key_file(lineage)
    try:
        original = path.read_bytes()
        info = path.stat()
    except OSError as exc:
        raise RolloverError(f"cannot read {path}: {exc.strerror}; run as the owner of certbot's "
                            "folders (root for /etc/letsencrypt)") from None
    mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
    atomic_write(path, key_pem, mode=mode, owner=owner if os.geteuid() == 0 else None)
    try:
        yield path
    finally:
        atomic_write(path, original, mode=mode, owner=owner if os.geteuid() == 0 else None)
