"""Run certbot as a child process under a timeout: the one certbot runner of elemta.

The daemon never imports certbot: it runs certbot's entry point in a child
Python (the interpreter running elemta, so the elemta plugin is found) through
``spawnProcess`` in a session and process group of its own, so a timeout can end
certbot *and* anything it started (SIGTERM to the group, SIGKILL after a grace
period); run as root, it can run certbot as another user (the owner of a lineage's
folders). What certbot said about a failure (the CA's report and the plugin's hint
from stdout, the errors from stderr: ``certbot_output.summarize``) becomes the
reason an admin reads in the log and in failure mails.

The daemon drives ``ProcessRunner`` on its reactor; the ``elemta cert ...`` commands
drive the same ``ProcessRunner`` to the end of one run with ``blocking.run_blocking``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from elemta_smtp.acme.certbot_output import summarize
from elemta_smtp.cache.lineages import Lineage, User, own_lineage
from elemta_smtp.config import Config

log = Logger(namespace="elemta.acme.runner")

#: Put the child in a new session (and so a new process group), become the user given as
#: ``UID GID`` (with that user's groups; ``- -``: stay who we are), ask Linux to send it
#: SIGTERM when the daemon dies (a certbot left running by a killed daemon would hold a
#: cluster lease nobody renews), then exec the command. The wrapper runs as the parent's
#: user, so it can always start; only the command runs as the other user.
_SPAWN = """import os, sys
try:
    import ctypes, signal  # before setuid: the other user may not read this Python's files
except ImportError:
    ctypes = None
parent = os.getppid()
os.setsid()
uid, gid = sys.argv[1:3]
if uid != "-":
    import pwd
    os.setgid(int(gid))
    try:
        os.initgroups(pwd.getpwuid(int(uid)).pw_name, int(gid))
    except KeyError:
        os.setgroups([int(gid)])
    os.setuid(int(uid))
if sys.platform == "linux" and ctypes is not None:
    try:  # after setuid, which clears it
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit("elemta: the daemon that started certbot has ended")
os.execvp(sys.argv[3], sys.argv[3:])
"""
TAIL_LINES = 40
_LINE_LIMIT = 500


class Cancellable(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The part of IReactorTime elemta uses (``task.Clock`` in tests)."""

    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[..., object], *args: object,
                  **kw: object) -> Cancellable: ...


class SpawnedProcess(Protocol):
    pid: int | None

    def closeStdin(self) -> None: ...


class SpawnReactor(Protocol):
    """The part of IReactorProcess the runner uses."""

    def spawnProcess(self, processProtocol: ProcessProtocol, executable: str,
                     args: Sequence[str], *, env: Mapping[str, str] | None = ...,
                     childFDs: Mapping[int, str] | None = ...) -> SpawnedProcess: ...


@dataclass(frozen=True)
class RunResult:
    """How a child process ended."""

    argv: tuple[str, ...]
    exit_code: int | None  # None when ended by a signal
    signal: int | None
    timed_out: bool
    stdout_tail: tuple[str, ...]
    stderr_tail: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def reason(self) -> str:
        """Why it failed, in words: what certbot said about it (the CA's detail, the
        plugin's hint, its errors) when it said anything."""
        if self.ok:
            return ""
        tail = "\n".join(summarize(self.stdout_tail, self.stderr_tail))
        if self.timed_out:
            head = f"certbot did not finish within {self.seconds:.0f}s and was killed"
        elif self.signal is not None:
            head = f"certbot was killed by signal {self.signal}"
        else:
            head = f"certbot exited with status {self.exit_code}"
        return f"{head}:\n{tail}" if tail else head


def _tail_lines(buffer: bytes, tail: deque[str]) -> bytes:
    """Move complete lines from ``buffer`` into ``tail``; return the rest."""
    *lines, rest = buffer.split(b"\n")
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line[:_LINE_LIMIT])
    return rest[-64 * 1024:]  # an endless line must not grow without bound


class _Collector(ProcessProtocol):
    def __init__(self, tail: int) -> None:
        self.stdout: deque[str] = deque(maxlen=tail)
        self.stderr: deque[str] = deque(maxlen=tail)
        self._buffers = {1: b"", 2: b""}
        self.ended: Deferred[list[Failure]] = Deferred()  # wrapped: a bare Failure would errback

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD in self._buffers:
            tail = self.stdout if childFD == 1 else self.stderr
            self._buffers[childFD] = _tail_lines(self._buffers[childFD] + data, tail)

    def processEnded(self, reason: Failure) -> None:
        for fd, tail in ((1, self.stdout), (2, self.stderr)):
            _tail_lines(self._buffers[fd] + b"\n", tail)
        self.ended.callback([reason])


class ProcessRunner:
    """Runs commands as children of ``reactor``; ``clock`` times the timeouts
    (the reactor itself unless a test passes a ``task.Clock``)."""

    def __init__(self, reactor: SpawnReactor, clock: Clock | None = None,
                 env: Mapping[str, str] | None = None,
                 kill_grace: float = 5.0, tail: int = TAIL_LINES) -> None:
        self._reactor = reactor
        self._clock: Clock = clock if clock is not None else cast(Clock, reactor)
        self._env = dict(os.environ if env is None else env)
        self._kill_grace = kill_grace
        self._tail = tail

    def run(self, argv: Sequence[str], timeout: float,
            user: User | None = None) -> Deferred[RunResult]:
        """Start ``argv`` in a new process group (as ``user`` when given: we are root, and
        the child gets that user's groups too); fire with a ``RunResult`` when it ends.
        After ``timeout`` seconds the group gets SIGTERM, then SIGKILL. Never errbacks
        for the child's own failures; a command that cannot start fires as exit 127.
        Cancelling the Deferred stops the child the same way (for a daemon that stops)."""
        collector = _Collector(self._tail)
        started = self._clock.seconds()
        as_user = ["-", "-"] if user is None else [str(user.uid), str(primary_gid(user))]
        wrapped = [sys.executable, "-c", _SPAWN, *as_user, *argv]
        try:
            process = self._reactor.spawnProcess(collector, sys.executable, wrapped,
                                                 env=self._env, childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as exc:
            return succeed(RunResult(tuple(argv), 127, None, False, (),
                                     (f"cannot start {argv[0]}: {exc}",), 0.0))
        process.closeStdin()
        pid = process.pid or 0
        timed_out = False
        calls: list[Cancellable] = []

        def kill(sig: int) -> None:
            if pid > 0:  # killpg(0) would hit the daemon's own group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)

        def stop() -> None:
            kill(signal.SIGTERM)
            calls.append(self._clock.callLater(self._kill_grace, kill, signal.SIGKILL))

        def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            log.warn("{command} still running after {timeout:g}s: stopping it (SIGTERM, then "
                     "SIGKILL after {grace:g}s)", command=_short(argv), timeout=timeout,
                     grace=self._kill_grace)
            stop()

        calls.append(self._clock.callLater(timeout, on_timeout))

        def cancel(_: Deferred[RunResult]) -> None:
            log.info("stopping {command} (elemta is stopping)", command=_short(argv))
            stop()

        result: Deferred[RunResult] = Deferred(canceller=cancel)

        def finished(wrapped_reason: list[Failure]) -> None:
            (reason,) = wrapped_reason
            kill(signal.SIGKILL)  # anything the child left behind in its group
            for call in calls:
                if call.active():
                    call.cancel()
            exit_code: int | None = 0
            sig: int | None = None
            if isinstance(reason.value, ProcessTerminated):
                exit_code = reason.value.exitCode
                sig = reason.value.signal
            elif not isinstance(reason.value, ProcessDone):
                exit_code = None
            if not result.called:  # not cancelled
                result.callback(RunResult(tuple(argv), exit_code, sig, timed_out,
                                          tuple(collector.stdout), tuple(collector.stderr),
                                          self._clock.seconds() - started))

        collector.ended.addCallback(finished)
        return result


def _short(argv: Sequence[str]) -> str:
    """``certbot renew`` rather than the whole command line (``python -c CERTBOT_MAIN ...``)."""
    if CERTBOT_MAIN in argv or (argv and Path(argv[0]).name == "certbot"):
        rest = argv[argv.index(CERTBOT_MAIN) + 1:] if CERTBOT_MAIN in argv else argv[1:]
        words = [a for a in rest if not a.startswith("-") and "/" not in a]
        return " ".join(["certbot", *words[:1]])
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:2]))


# --- certbot command lines (pure) ---


def cert_name(config: Config) -> str:
    """The certbot lineage name elemta uses when it obtains a certificate: the domain."""
    return config.tls.letsencrypt.domain


#: ``python -m certbot`` does not work (certbot has no __main__): call its entry point.
CERTBOT_MAIN = "import sys; from certbot.main import main; sys.exit(main())"


def _base(lineage: Lineage, python: str) -> list[str]:
    return [python, "-c", CERTBOT_MAIN, *lineage.dir_args(), "--non-interactive"]


def certonly_command(config: Config, python: str = sys.executable,
                     dry_run: bool = False, force: bool = False, *,
                     lineage_name: str | None = None, key_type: str | None = None,
                     install: bool = True) -> list[str]:
    """``certbot certonly`` with the elemta authenticator and installer, into elemta's
    own certbot folders, for every name of ``[tls.letsencrypt] names`` (one lineage named
    after the domain; a changed name set replaces its certificate). The challenge type
    follows [tls.letsencrypt] challenge through the plugin, which reads elemta.toml.
    ``lineage_name`` and ``key_type`` name another lineage and key type (the RSA certificate
    of key_type = "ecdsa+rsa"); with [tls.dane] enabled the lineage keeps its key at every
    renewal (``--reuse-key``, stored in its renewal configuration); ``install=False`` leaves
    the installer out (a certificate that must not be served yet)."""
    le = config.tls.letsencrypt
    lineage = own_lineage(le.cache_dir, lineage_name or cert_name(config))
    command = [*_base(lineage, python), "certonly", "-a", "elemta",
               *(["-i", "elemta"] if install else []),
               "--elemta-config", str(_config_path(config)),
               *(arg for name in le.names for arg in ("-d", name)),
               "--cert-name", lineage.cert_name, "--server", le.acme_directory,
               "-m", le.email, "--agree-tos", "--key-type", key_type or le.key_types[0]]
    if config.tls.dane.enabled:
        command.append("--reuse-key")
    if dry_run:
        command.append("--dry-run")
    if force:
        # certbot keeps a lineage it already has ("not yet due for renewal") and then
        # never calls the installer: force a new certificate when the cache lacks it
        command.append("--force-renewal")
    return command


def renew_command(config: Config, lineage: Lineage, python: str = sys.executable,
                  force: bool = False, key_args: Sequence[str] = ()) -> list[str]:
    """``certbot renew`` for ``lineage`` only, in the folders it lives in, installed by the
    elemta installer with this elemta.toml (whatever its renewal configuration says). With
    [tls.dane] enabled the key is kept (``--reuse-key``: the published TLSA record stays
    true; certbot stores it, so its own timer keeps the key too); ``key_args`` are
    ``key_change_args``'s."""
    command = [*_base(lineage, python), "renew", "--cert-name", lineage.cert_name,
               "--no-random-sleep-on-renew", "--installer", "elemta",
               "--elemta-config", str(_config_path(config))]
    if config.tls.dane.enabled:
        command.append("--reuse-key")
    if force:
        command.append("--force-renewal")
    command += key_args
    return command


def key_change_args(configured: str, served: str, dane: bool) -> list[str]:
    """What a renewal must add to move from a ``served`` key of one type ("ecdsa", "rsa") to
    the ``configured`` one: a new key of that type; nothing while they agree (or the served
    type is unknown), and nothing with DANE, where the key changes only through a staged
    rollover (``elemta dane rollover``)."""
    if not served or served == configured or dane:
        return []
    return ["--key-type", configured, "--new-key"]


def _config_path(config: Config) -> Path:
    if config.path is None:
        raise ValueError("certbot needs the path of elemta.toml: run elemta with -c PATH")
    return config.path.resolve()


def primary_gid(user: User) -> int:
    """The group a child run as ``user`` starts with: the user's own primary group."""
    try:
        return pwd.getpwuid(user.uid).pw_gid
    except KeyError:
        return min(user.gids, default=user.uid)
