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
While the swap lasts, ``dane/<name>.lineage-key.json`` (0600) says which file holds the next
key and keeps its own: a finish killed meanwhile is undone (``put_back``) by the next
finish, ``elemta cert renew`` or daemon check, before certbot runs again.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.cache.layout import swapped_key_path
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
def next_key_in_lineage(lineage: Lineage, key_pem: bytes, record: Path) -> Iterator[Path]:
    """While the block runs, the lineage's current key file holds ``key_pem`` (same mode and
    owner); afterwards it holds its own key again, also when the block raises. ``record``
    (0600) keeps the file's own key meanwhile: when this process is killed before it puts
    the key back, ``put_back`` does it later."""
    path = key_file(lineage)
    try:
        original = path.read_bytes()
        info = path.stat()
    except OSError as exc:
        raise RolloverError(f"cannot read {path}: {exc.strerror}; run as the owner of certbot's "
                            "folders (root for /etc/letsencrypt)") from None
    mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
    atomic_write(record, json.dumps({"path": str(path), "mode": mode, "uid": owner[0],
                                     "gid": owner[1], "key": original.decode("ascii"),
                                     "pid": os.getpid(), "started": _started(os.getpid())}
                                    ).encode(), mode=0o600)
    atomic_write(path, key_pem, mode=mode, owner=owner if os.geteuid() == 0 else None)
    try:
        yield path
    finally:
        atomic_write(path, original, mode=mode, owner=owner if os.geteuid() == 0 else None)
        record.unlink(missing_ok=True)


def put_back(record: Path) -> Path | None:
    """Undo a ``next_key_in_lineage`` whose process was killed (``elemta dane rollover
    finish`` under SIGKILL): the lineage's key file gets its own key again, and ``record`` goes.
    Returns that file; None when nothing was interrupted. ``RolloverError`` when it cannot."""
    try:
        raw = record.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RolloverError(f"cannot read {record}: {exc.strerror}; run as the owner of the "
                            "cache") from None
    try:
        doc = json.loads(raw)
        path, key = Path(doc["path"]), str(doc["key"]).encode("ascii")
        mode, owner = int(doc["mode"]), (int(doc["uid"]), int(doc["gid"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        raise RolloverError(f"{record} is broken: an interrupted `elemta dane rollover finish` may "
                            "have left the next key in certbot's lineage; compare the lineage's "
                            "privkey.pem with the key served (`elemta dane status`), then delete "
                            f"{record}") from None
    pid = doc.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _started(pid) == doc.get("started") \
            and _started(pid) is not None:
        raise RolloverError(f"`elemta dane rollover finish` (pid {pid}) is running with the next "
                            "key in certbot's lineage: try again when it has ended")
    try:
        atomic_write(path, key, mode=mode, owner=owner if os.geteuid() == 0 else None)
    except ElemtaError as exc:
        raise RolloverError(f"cannot put certbot's own key back into {path}: {exc}") from None
    record.unlink(missing_ok=True)
    return path


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot: a pid reused later differs);
    None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def put_back_interrupted(cache_dir: Path, name: str, variant: str = "") -> Path | None:
    """``put_back`` for the certificate ``live/<name>[.<variant>].pem``."""
    return put_back(swapped_key_path(cache_dir, name, variant))
