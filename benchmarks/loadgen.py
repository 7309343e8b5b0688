"""The load generator: a pool of client processes, each sending messages one
after another with a lean raw-socket SMTP client (the ``ssl`` module, no
smtplib), so that as little of the two cores as possible goes to the client.

Modes (every message is 4 KiB, one recipient, ``QUIT`` answered before close):

* ``plain``       a new plain connection per message
* ``starttls``    a new connection per message, upgraded with STARTTLS
* ``implicit``    a new implicit-TLS connection per message
* ``persistent``  ``per_connection`` messages per implicit-TLS connection

A message's latency is from the start of its connection (or, in
``persistent`` mode, from ``MAIL FROM``) to the 250 reply after its data.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from types import TracebackType

from benchmarks.certs import HOSTNAME

MODES = ("starttls", "implicit", "persistent", "plain")
MESSAGE_SIZE = 4096
SOCKET_TIMEOUT = 10.0
MAX_ERRORS_KEPT = 5
MAX_FAILURES_IN_A_ROW = 3  # then the client gives up on this job: the server is not answering


class SMTPReplyError(Exception):
    """The server answered something other than what the client expected."""


@dataclass(frozen=True)
class Job:
    """What one client process does in one measurement."""

    mode: str
    host: str
    plain_port: int
    tls_port: int
    messages: int
    per_connection: int
    time_limit: float
    recipient: str = f"bench@{HOSTNAME.partition('.')[2]}"


@dataclass
class ClientResult:
    """What one client process did: accepted messages, failures and timings."""

    accepted: int = 0
    failed: int = 0
    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def make_message(size: int = MESSAGE_SIZE, recipient: str = Job.recipient) -> bytes:
    """A ``size``-byte message (headers, body and the final ``.`` line), CRLF
    line endings, no line starting with a dot."""
    head = (f"From: bench@client.example\r\nTo: {recipient}\r\nSubject: elemta benchmark\r\n"
            "Message-ID: <bench@client.example>\r\n\r\n").encode()
    tail = b"\r\n.\r\n"
    line = b"x" * 74 + b"\r\n"
    body_size = size - len(head) - len(tail)
    body = (line * (body_size // len(line) + 1))[:body_size]
    if body.endswith(b"\r"):
        body = body[:-1] + b"y"
    return head + body + tail


class Conversation:
    """One SMTP connection spoken line by line (no pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def reply(self) -> int:
        """Read one (possibly multi-line) reply and return its code."""
        buf = b""
        while True:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SMTPReplyError(f"connection closed by the server after {buf[-200:]!r}")
            buf += chunk
            if buf.endswith(b"\r\n"):
                previous = buf.rfind(b"\r\n", 0, len(buf) - 2)
                start = previous + 2 if previous >= 0 else 0
                if buf[start + 3:start + 4] != b"-":
                    return int(buf[start:start + 3])

    def expect(self, code: int, what: bytes = b"") -> None:
        """Send ``what`` (if any) and require reply ``code``."""
        if what:
            self.sock.sendall(what)
        got = self.reply()
        if got != code:
            raise SMTPReplyError(f"{what.strip().decode() or 'greeting'}: expected {code}, got {got}")

    def send_message(self, message: bytes, recipient: str) -> None:
        self.expect(250, b"MAIL FROM:<bench@client.example>\r\n")
        self.expect(250, b"RCPT TO:<" + recipient.encode() + b">\r\n")
        self.expect(354, b"DATA\r\n")
        self.expect(250, message)

    def close(self) -> None:
        self.sock.close()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return sock


def client_context() -> ssl.SSLContext:
    """TLS 1.2+ without certificate checks: the benchmark measures servers, not PKI."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def open_conversation(mode: str, job: Job, ctx: ssl.SSLContext) -> Conversation:
    """Connect and greet (EHLO) as ``mode`` says; the result is ready for MAIL FROM."""
    if mode in ("implicit", "persistent"):
        raw = _connect(job.host, job.tls_port)
        conv = Conversation(ctx.wrap_socket(raw, server_hostname=HOSTNAME))
        conv.expect(220)
        conv.expect(250, b"EHLO client.example\r\n")
        return conv
    raw = _connect(job.host, job.plain_port)
    conv = Conversation(raw)
    conv.expect(220)
    conv.expect(250, b"EHLO client.example\r\n")
    if mode == "starttls":
        conv.expect(220, b"STARTTLS\r\n")
        conv.sock = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
        conv.expect(250, b"EHLO client.example\r\n")
    return conv


def run_job(job: Job, clock: Callable[[], float] = time.monotonic) -> ClientResult:
    """Send ``job.messages`` messages (fewer if ``job.time_limit`` runs out first)."""
    ctx = client_context()
    message = make_message(recipient=job.recipient)
    per_connection = job.per_connection if job.mode == "persistent" else 1
    result = ClientResult(start=clock())
    deadline = result.start + job.time_limit
    done = failures_in_a_row = 0
    while done < job.messages and clock() < deadline:
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            result.failed += job.messages - done
            result.errors.append(f"{job.mode}: gave up after {failures_in_a_row} failed connections in a row")
            break
        batch = min(per_connection, job.messages - done)
        conv: Conversation | None = None
        sent = 0
        try:
            started = clock()
            conv = open_conversation(job.mode, job, ctx)
            for _ in range(batch):
                if job.mode == "persistent":
                    started = clock()
                conv.send_message(message, job.recipient)
                result.latencies.append(clock() - started)
                sent += 1
                result.accepted += 1
            conv.expect(221, b"QUIT\r\n")
            failures_in_a_row = 0
        except (OSError, SMTPReplyError, ValueError) as exc:
            failures_in_a_row += 1
            result.failed += batch - sent
            if len(result.errors) < MAX_ERRORS_KEPT:
                result.errors.append(f"{job.mode}: {type(exc).__name__}: {exc}")
        finally:
            if conv is not None:
                conv.close()
        done += batch
    result.end = clock()
    return result


def _worker(jobs: multiprocessing.Queue[Job | None],
            results: multiprocessing.Queue[tuple[int, ClientResult]], index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's; it stops us
    while (job := jobs.get()) is not None:
        results.put((index, run_job(job)))


class ClientPool:
    """``size`` long-lived client processes; ``run`` gives each one job at once."""

    def __init__(self, size: int = 4) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: multiprocessing.Queue[tuple[int, ClientResult]] = ctx.Queue()
        self.jobs: list[multiprocessing.Queue[Job | None]] = [ctx.Queue() for _ in range(size)]
        self.processes: list[SpawnProcess] = [
            ctx.Process(target=_worker, args=(q, self.results, i), daemon=True, name=f"bench-client-{i}")
            for i, q in enumerate(self.jobs)
        ]
        for p in self.processes:
            p.start()

    def run(self, job: Job) -> list[ClientResult]:
        """Every client runs ``job``; waits at most the job's time limit plus a margin."""
        for q in self.jobs:
            q.put(job)
        results: dict[int, ClientResult] = {}
        deadline = time.monotonic() + job.time_limit + 2 * SOCKET_TIMEOUT + 10
        while len(results) < len(self.jobs):
            try:
                index, result = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{len(self.jobs) - len(results)} client process(es) did not "
                                   f"finish {job.mode} within {job.time_limit:g}s") from None
            results[index] = result
        return [results[i] for i in sorted(results)]

    def close(self) -> None:
        """Stop every client process (politely, then by force)."""
        for q in self.jobs:
            with contextlib.suppress(OSError, ValueError):
                q.put(None)
        for p in self.processes:
            p.join(timeout=3)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
