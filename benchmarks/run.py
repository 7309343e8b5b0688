"""Run the benchmark: ``python -m benchmarks.run [--rounds 5] [--messages 200] ...``

Each round starts every server in turn (the order rotates from round to
round) on a fresh Maildir, warms it up, then measures every mode: the
client pool sends ``--messages`` messages from each of ``--clients``
processes while the server's own CPU time is read before and after.
Prints medians over rounds and per-round ratios against the first server
(elemta unless left out). Everything is bounded: per-measurement and total
time limits, and every server process is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from benchmarks.certs import write_certificate
from benchmarks.loadgen import MESSAGE_SIZE, MODES, ClientPool, Job
from benchmarks.servers import (
    CHOICES,
    SERVERS,
    BenchmarkError,
    RunningServer,
    accepted_count,
    can_make_filesystems,
    count_delivered,
    fresh_folder,
    is_checkout_server,
    running_server,
)
from benchmarks.stats import Measurement, check_targets, format_table, measure, summarize

SETTLE_SECONDS = 0.2  # let the server finish closing connections before reading its CPU time


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices and not is_checkout_server(t)]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{','.join(bad) or 'nothing'}: choose from {','.join(choices)}")
        return list(dict.fromkeys(items))

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--messages", type=int, default=200,
                   help="messages per client process per measurement (default 200)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--per-connection", type=int, default=50,
                   help="messages per connection in persistent mode (default 50)")
    p.add_argument("--modes", type=_csv(MODES), default=list(MODES),
                   help=f"comma-separated (default {','.join(MODES)})")
    p.add_argument("--servers", type=_csv(CHOICES), default=list(SERVERS),
                   help=f"comma-separated; the first is the baseline of the ratios "
                        f"(default {','.join(SERVERS)}); elemta-metrics is elemta with [metrics] "
                        "on, scraped once per measurement; elemta@DIR runs the elemta of another "
                        "checkout (e.g. a git worktree of an older commit) in the same run")
    p.add_argument("--warmup", type=int, default=5,
                   help="unmeasured messages per client per mode after each server start (default 5)")
    p.add_argument("--fresh-fs", action="store_true",
                   help="deliver into a new ext4 on a zero-filled loop image for every server "
                        "start (needs root); default: a new folder in the temp dir")
    p.add_argument("--time-limit", type=float, default=60.0,
                   help="seconds one measurement may take before its clients stop (default 60)")
    p.add_argument("--total-limit", type=float, default=900.0,
                   help="seconds after which no new round is started (default 900)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here as JSON")
    p.add_argument("--workdir", type=Path,
                   help="keep configs, logs and Maildirs here instead of a temp dir removed at the end")
    return p


def _image_bytes(args: argparse.Namespace) -> int:
    """A loop image large enough for every message of one server start, with room to spare."""
    if not args.fresh_fs:
        return 0
    messages = args.clients * (args.messages + args.warmup) * len(args.modes)
    return int(max(64 << 20, messages * 16 << 10))


def measure_server(pool: ClientPool, server: RunningServer, args: argparse.Namespace,
                   round_: int) -> list[Measurement]:
    """Warm ``server`` up, then measure every mode in order."""
    def job(mode: str, messages: int) -> Job:
        return Job(mode=mode, host="127.0.0.1", plain_port=server.plain_port,
                   tls_port=server.tls_port, messages=messages,
                   per_connection=args.per_connection, time_limit=args.time_limit)

    if args.warmup:
        for mode in args.modes:
            pool.run(job(mode, args.warmup))
    out = []
    for mode in args.modes:
        time.sleep(SETTLE_SECONDS)
        before = server.cpu_seconds()
        results = pool.run(job(mode, args.messages))
        time.sleep(SETTLE_SECONDS)
        if server.metrics_port is not None:  # one scrape per measurement, inside its CPU time
            scraped = accepted_count(server.metrics_port)
        m = measure(round_, server.name, mode, results, server.cpu_seconds() - before)
        print(f"round {round_ + 1} {server.name:9} {mode:10} {m.rate:7.1f} msgs/s "
              f"{m.cpu_ms:6.2f} CPU ms/msg  p50 {m.p50_ms:6.1f} ms  p99 {m.p99_ms:6.1f} ms"
              + (f"  FAILED {m.failed}: {m.errors[0]}" if m.failed else ""),
              file=sys.stderr, flush=True)
        out.append(m)
        if server.metrics_port is not None:
            counted = args.warmup * args.clients * len(args.modes) + sum(x.accepted for x in out)
            if scraped != counted:
                raise BenchmarkError(f"{server.name}: /metrics counted {scraped:g} accepted "
                                     f"messages, the clients {counted} (round {round_ + 1}, {mode})")
    return out


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Measurement], list[str]]:
    """Every round, every server; returns the measurements and any warnings."""
    cert, key = write_certificate(workdir / "tls")
    measurements: list[Measurement] = []
    warnings: list[str] = []
    started = time.monotonic()
    with ClientPool(args.clients) as pool:
        for round_ in range(args.rounds):
            if round_ and time.monotonic() - started > args.total_limit:
                warnings.append(f"stopped after {round_} round(s): --total-limit {args.total_limit:g}s")
                break
            shift = round_ % len(args.servers)
            for name in args.servers[shift:] + args.servers[:shift]:
                where = workdir / f"round{round_ + 1}" / name
                with fresh_folder(where / "mail", _image_bytes(args)) as maildir, \
                        running_server(name, where, maildir, cert, key) as server:
                    ms = measure_server(pool, server, args, round_)
                    measurements.extend(ms)
                expected = sum(m.accepted for m in ms) + args.warmup * args.clients * len(args.modes)
                # counted after the server stopped (and the loop fs was unmounted: then skip)
                if not args.fresh_fs:
                    delivered = count_delivered(maildir)
                    if delivered < expected - sum(m.failed for m in ms):
                        warnings.append(f"round {round_ + 1} {name}: {delivered} files in new/ but "
                                        f"{expected} messages were accepted")
    return measurements, warnings


def _machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "message_bytes": MESSAGE_SIZE}


def report(args: argparse.Namespace, measurements: list[Measurement], warnings: list[str],
           argv: Sequence[str]) -> str:
    """The table, the target verdicts and the warnings; writes --json if asked."""
    baseline = args.servers[0]
    rows = summarize(measurements, baseline)
    targets = check_targets(measurements) if "elemta" in args.servers else []
    lines = [format_table(rows, baseline), ""]
    lines += [f"{t.mode:10} {'met    ' if t.met else 'NOT met'}  {t.text}" for t in targets]
    lines += [f"warning: {w}" for w in warnings]
    lines += [f"errors ({r.mode} {r.server}): {e}" for r in rows for e in r.errors]
    if args.json:
        args.json.write_text(json.dumps(_clean({
            "command": ["python", "-m", "benchmarks.run", *argv],
            "settings": vars(args),
            "machine": _machine(),
            "measurements": [m.as_dict() for m in measurements],
            "summary": [{"mode": r.mode, "server": r.server, "rounds": r.rounds,
                         "msgs_per_s": r.rate, "cpu_ms_per_msg": r.cpu_ms, "p50_ms": r.p50_ms,
                         "p99_ms": r.p99_ms, "failed": r.failed,
                         f"msgs_per_s_vs_{baseline}": vars(r.rate_ratio),
                         f"cpu_vs_{baseline}": vars(r.cpu_ratio)} for r in rows],
            "targets": [vars(t) for t in targets],
            "warnings": warnings,
        }), indent=2, allow_nan=False) + "\n")
    return "\n".join(lines).rstrip()


def _clean(value: object) -> object:
    """JSON-safe: NaN becomes null, paths become strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if min(args.rounds, args.messages, args.clients, args.per_connection) < 1 or args.warmup < 0:
        print("error: --rounds, --messages, --clients and --per-connection must be at least 1",
              file=sys.stderr)
        return 2
    if args.fresh_fs and (why := can_make_filesystems()):
        print(f"error: {why}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
            measurements, warnings = run(args, workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="elemta-bench-") as tmp:
                measurements, warnings = run(args, Path(tmp))
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every server and client process was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report(args, measurements, warnings, argv))
    return 1 if any(m.accepted == 0 for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
