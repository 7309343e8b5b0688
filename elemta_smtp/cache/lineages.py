"""Which certbot lineage a cached certificate comes from, and whether elemta can renew it.

The installer (``certbot ... -i elemta``) records, for every certificate it puts in
``live/<name>.pem``, the certbot folders and lineage name it came from::

    <cache_dir>/certbot/lineages/<name>.json
        {"cert_name": "mail.example.com", "config_dir": "/etc/letsencrypt",
         "work_dir": "/var/lib/letsencrypt", "logs_dir": "/var/log/letsencrypt"}

so the daemon's renewal, ``elemta cert renew`` and the packaged timer renew that
lineage where it lives, not only in elemta's own ``<cache_dir>/certbot/config``.
Without a record (a cache written before records existed) elemta's own folders are
assumed. ``renewal_blocker`` says, in one sentence with the fix, when the user
elemta runs as cannot renew a lineage (certbot would fail on its files).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elemta_smtp.cache.atomic import atomic_write
from elemta_smtp.cache.layout import VARIANTS, certbot_folders, ensure_layout, lineage_dir
from elemta_smtp.certs.names import is_dns_name, normalize
from elemta_smtp.config import Config
from elemta_smtp.errors import CacheError


class LineageError(CacheError):
    """A lineage record cannot be written."""


@dataclass(frozen=True)
class Lineage:
    """A certbot lineage: its name and the three folders certbot keeps it in."""

    cert_name: str
    config_dir: Path
    work_dir: Path
    logs_dir: Path
    recorded: bool = True  # False: assumed (no record; elemta's own folders)

    @property
    def renewal_conf(self) -> Path:
        return self.config_dir / "renewal" / f"{self.cert_name}.conf"

    def dir_args(self) -> list[str]:
        """certbot's ``--config-dir/--work-dir/--logs-dir`` for this lineage."""
        return ["--config-dir", str(self.config_dir), "--work-dir", str(self.work_dir),
                "--logs-dir", str(self.logs_dir)]


def own_lineage(cache_dir: Path, cert_name: str) -> Lineage:
    """The lineage ``cert_name`` in elemta's own certbot folders (not recorded)."""
    config_dir, work_dir, logs_dir = certbot_folders(cache_dir)
    return Lineage(cert_name, config_dir, work_dir, logs_dir, recorded=False)


def record_path(cache_dir: Path, name: str, variant: str = "") -> Path:
    """``<cache_dir>/certbot/lineages/<name>.json`` (``<name>.<variant>.json`` for the record
    of ``live/<name>.<variant>.pem``); ``name`` must be a DNS name."""
    clean = normalize(name)
    if not is_dns_name(clean) or (variant and variant not in VARIANTS):
        raise LineageError(f"{name!r} is not a DNS name")
    return lineage_dir(cache_dir) / (f"{clean}.{variant}.json" if variant else f"{clean}.json")


def encode(lineage: Lineage) -> bytes:
    return (json.dumps({"cert_name": lineage.cert_name, "config_dir": str(lineage.config_dir),
                        "work_dir": str(lineage.work_dir), "logs_dir": str(lineage.logs_dir)},
                       indent=2) + "\n").encode()


def decode(data: bytes) -> Lineage | None:
    """The lineage in a record's bytes; None when they are not a valid record."""
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    keys = ("cert_name", "config_dir", "work_dir", "logs_dir")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw[k] for k in keys):
        return None
    folders = [Path(raw[k]) for k in keys[1:]]
    if not all(f.is_absolute() for f in folders) or "/" in raw["cert_name"]:
        return None
    return Lineage(raw["cert_name"], folders[0], folders[1], folders[2])


def read_record(cache_dir: Path, name: str, variant: str = "") -> Lineage | None:
    """The recorded lineage of ``live/<name>.pem`` (``live/<name>.<variant>.pem``); None when
    there is no (valid) record."""
    try:
        return decode(record_path(cache_dir, name, variant).read_bytes())
    except (OSError, LineageError):
        return None


def lineage_for(cache_dir: Path, names: Iterable[str], default_cert_name: str,
                variant: str = "") -> Lineage:
    """The recorded lineage of the first of ``names`` that has one, else elemta's own
    lineage ``default_cert_name`` (for ``live/<name>.<variant>.pem`` with a variant)."""
    for name in names:
        found = read_record(cache_dir, name, variant)
        if found is not None:
            return found
    return own_lineage(cache_dir, default_cert_name)


def write_record(cache_dir: Path, name: str, lineage: Lineage, variant: str = "") -> Path:
    """Record where ``live/<name>.pem`` (``live/<name>.<variant>.pem``) came from (atomically,
    0600; the folder takes the cache directory's owner when written as root, so the daemon
    can read it)."""
    path = record_path(cache_dir, name, variant)
    ensure_layout(cache_dir)
    atomic_write(path, encode(lineage))
    return path


def forget_record(cache_dir: Path, name: str, variant: str = "") -> None:
    """Remove the record of ``live/<name>.pem`` (a certificate installed from plain files)."""
    with contextlib.suppress(OSError, LineageError):
        record_path(cache_dir, name, variant).unlink()


# --- can this user renew it? ----------------------------------------------------------

@dataclass(frozen=True)
class User:
    uid: int
    gids: frozenset[int]
    name: str


def user_of(uid: int) -> User:
    """The user ``uid`` with its groups (from the password and group databases)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return User(uid, frozenset(), str(uid))
    return User(uid, frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)), entry.pw_name)


def current_user() -> User:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return User(uid, frozenset((os.getegid(), *os.getgroups())), name)


def daemon_user(cache_dir: Path) -> User:
    """Whom the daemon runs as: the owner of its cache directory (the current user
    when the directory does not exist yet)."""
    try:
        return user_of(cache_dir.stat().st_uid)
    except OSError:
        return current_user()


Stat = Callable[[Path], os.stat_result]

_R, _W, _X = 4, 2, 1


def allows(info: os.stat_result, user: User, want: int) -> bool:
    """Do the permission bits of ``info`` give ``user`` every bit of ``want`` (rwx = 421)?"""
    if user.uid == 0:
        return not (want & _X) or stat.S_ISDIR(info.st_mode) or bool(info.st_mode & 0o111)
    mode = info.st_mode
    if info.st_uid == user.uid:
        bits = (mode >> 6) & 7
    elif info.st_gid in user.gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def _nearest(path: Path, stat_of: Stat) -> tuple[Path, os.stat_result] | None:
    """``path`` or its nearest existing parent, with its stat."""
    for candidate in (path, *path.parents):
        try:
            return candidate, stat_of(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def unwritable(folders: Sequence[Path], user: User, stat_of: Stat = Path.stat) -> Path | None:
    """The first of ``folders`` ``user`` cannot create files in (or, when it does not exist
    yet, whose nearest existing parent it cannot create it in), or whose parents it cannot
    pass through; None when it can write them all."""
    for folder in folders:
        found = _nearest(folder, stat_of)
        if found is None:
            return folder
        existing, info = found
        if not allows(info, user, _W | _X):
            return existing
        for parent in existing.parents:
            try:
                if not allows(stat_of(parent), user, _X):
                    return parent
            except OSError:
                return parent
    return None


def unreadable(root: Path, user: User, limit: int = 200) -> Path | None:
    """The first file or folder under ``root`` (``root`` included) ``user`` cannot read;
    looks at ``limit`` entries at most (certbot's account folder holds a handful)."""
    seen = 0
    for folder, dirs, files in os.walk(root):
        for entry in (Path(folder), *(Path(folder) / f for f in files)):
            seen += 1
            try:
                info = entry.stat()
            except OSError:
                return entry
            want = _R | _X if stat.S_ISDIR(info.st_mode) else _R
            if not allows(info, user, want):
                return entry
            if seen >= limit:
                return None
        dirs.sort()
    return None


def _fix(cache_dir: Path, user: User, domain: str, config_path: Path | None) -> str:
    config_dir, work_dir, logs_dir = certbot_folders(cache_dir)
    as_user = f"sudo -u {user.name} " if user.uid != 0 else ""
    return (f"enable the packaged timer, which renews it as the owner of those folders "
            f"(systemctl enable --now elemta-certbot-renew.timer), or obtain it into elemta's own "
            f"folders: {as_user}certbot certonly -a elemta -i elemta -d {domain} --elemta-config "
            f"{config_path or '/etc/elemta/elemta.toml'} --config-dir {config_dir} --work-dir "
            f"{work_dir} --logs-dir {logs_dir}")


def renewal_blocker(lineage: Lineage, user: User, *, cache_dir: Path, domain: str,
                    config_path: Path | None) -> str | None:
    """Why ``user`` cannot renew ``lineage`` with certbot, as one sentence with the fix;
    None when it can (or when the lineage is elemta's own and does not exist yet: the
    daemon obtains it first)."""
    if not lineage.recorded and not lineage.renewal_conf.exists():
        return None
    where = (f"certbot keeps the certificate {lineage.cert_name} in {lineage.config_dir}")
    if not lineage.renewal_conf.is_file():
        return (f"{where}, but {lineage.renewal_conf} does not exist any more (certbot delete?), "
                f"so nobody can renew it: {_fix(cache_dir, user, domain, config_path)}")
    folders = [lineage.config_dir, lineage.config_dir / "renewal",
               lineage.config_dir / "archive" / lineage.cert_name,
               lineage.config_dir / "live" / lineage.cert_name, lineage.work_dir,
               lineage.logs_dir]
    blocked = unwritable(folders, user)
    if blocked is None:
        blocked = unreadable(lineage.config_dir / "accounts", user) \
            if (lineage.config_dir / "accounts").exists() else None
        verb = "read"
    else:
        verb = "write"
    if blocked is None:
        return None
    return (f"user {user.name}, who runs elemta, cannot {verb} {blocked}, and {where}, so "
            f"elemta cannot renew it: {_fix(cache_dir, user, domain, config_path)}")


def certbot_user(lineage: Lineage) -> User | None:
    """Run as root, whom certbot should run as for ``lineage``: the owner of its config
    folder when that is not root (root-owned files there would break later renewals by
    that user); None to run as we are."""
    if os.geteuid() != 0:
        return None
    try:
        owner = lineage.config_dir.stat().st_uid
    except OSError:
        return None
    return user_of(owner) if owner != 0 else None


def renewal_warnings(config: Config) -> list[str]:
    """For ``config check`` and ``cert info``: why the daemon (the owner of the cache
    directory) will not be able to renew the certificate of ``live/<domain>.pem`` where it
    was installed from, as one sentence with the fix; nothing when it can, when Let's
    Encrypt is off, or when it does not renew ([tls.renewal] auto_renew = false: the
    timer does)."""
    le = config.tls.letsencrypt
    if not le.enabled or not config.tls.renewal.auto_renew:
        return []
    lineage = lineage_for(le.cache_dir, (le.domain,), le.domain)
    problem = renewal_blocker(lineage, daemon_user(le.cache_dir), cache_dir=le.cache_dir,
                              domain=le.domain, config_path=config.path)
    return [problem] if problem else []


def wrong_user(cache_dir: Path, command: str, euid: int | None = None) -> str | None:
    """Why running certbot as root would break the cache of a daemon that runs as another
    user (root-owned files it can neither read nor update), as an error line; else None."""
    euid = os.geteuid() if euid is None else euid
    try:
        owner = cache_dir.stat().st_uid
    except OSError:
        return None
    if euid != 0 or owner == 0:
        return None
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    return (f"error: {cache_dir} belongs to {name}, the user elemta runs as; as root, certbot "
            f"would leave files there that elemta cannot read or renew. Run: sudo -u {name} "
            f"{command}")
