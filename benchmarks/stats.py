"""Turning client results into figures: pure functions, no I/O.

One ``Measurement`` is one server in one mode in one round. The summary
takes medians over rounds, and ratios against a baseline server round by
round (the machine's speed drifts between rounds; ratios in one round
do not drift nearly as much).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from benchmarks.loadgen import ClientResult


@dataclass(frozen=True)
class Measurement:
    round: int
    server: str
    mode: str
    accepted: int
    failed: int
    seconds: float
    cpu_seconds: float
    p50_ms: float
    p99_ms: float
    errors: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        """Accepted messages per second of wall time."""
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per accepted message."""
        return 1000 * self.cpu_seconds / self.accepted if self.accepted else math.nan

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "errors": list(self.errors),
                "msgs_per_s": self.rate, "cpu_ms_per_msg": self.cpu_ms}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` from 0 to 100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def measure(round_: int, server: str, mode: str, results: Sequence[ClientResult],
            cpu_seconds: float) -> Measurement:
    """One measurement from every client's result and the server's CPU time."""
    latencies = [x for r in results for x in r.latencies]
    seconds = max(r.end for r in results) - min(r.start for r in results) if results else 0.0
    return Measurement(
        round=round_, server=server, mode=mode,
        accepted=sum(r.accepted for r in results),
        failed=sum(r.failed for r in results),
        seconds=seconds, cpu_seconds=cpu_seconds,
        p50_ms=1000 * percentile(latencies, 50), p99_ms=1000 * percentile(latencies, 99),
        errors=tuple(e for r in results for e in r.errors),
    )


@dataclass(frozen=True)
class Ratio:
    """Median and range of per-round ratios server / baseline."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Ratio:
        clean = [v for v in values if not math.isnan(v)]
        if not clean:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(clean), min(clean), max(clean))


@dataclass(frozen=True)
class Row:
    """One server in one mode, over every round."""

    mode: str
    server: str
    rounds: int
    rate: float
    cpu_ms: float
    p50_ms: float
    p99_ms: float
    failed: int
    rate_ratio: Ratio
    cpu_ratio: Ratio
    errors: tuple[str, ...] = field(default=())


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def summarize(measurements: Sequence[Measurement], baseline: str) -> list[Row]:
    """Medians per (mode, server), in the order modes and servers first appear."""
    by_key: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        by_key.setdefault((m.mode, m.server), []).append(m)
    modes = list(dict.fromkeys(m.mode for m in measurements))
    servers = list(dict.fromkeys(m.server for m in measurements))
    if baseline in servers:
        servers.remove(baseline)
        servers.insert(0, baseline)
    rows = []
    for mode in modes:
        base = {m.round: m for m in by_key.get((mode, baseline), [])}
        for server in servers:
            ms = by_key.get((mode, server), [])
            if not ms:
                continue
            paired = [(m, base[m.round]) for m in ms if m.round in base]
            rows.append(Row(
                mode=mode, server=server, rounds=len(ms),
                rate=_median([m.rate for m in ms]),
                cpu_ms=_median([m.cpu_ms for m in ms]),
                p50_ms=_median([m.p50_ms for m in ms]),
                p99_ms=_median([m.p99_ms for m in ms]),
                failed=sum(m.failed for m in ms),
                rate_ratio=Ratio.of([_div(m.rate, b.rate) for m, b in paired]),
                cpu_ratio=Ratio.of([_div(m.cpu_ms, b.cpu_ms) for m, b in paired]),
                errors=tuple(dict.fromkeys(e for m in ms for e in m.errors))[:5],
            ))
    return rows


@dataclass(frozen=True)
class Target:
    mode: str
    text: str
    met: bool


def check_targets(measurements: Sequence[Measurement], subject: str = "elemta") -> list[Target]:
    """The issue's targets for ``subject``, per mode, judged on medians of per-round ratios:
    CPU per message at most 2/3 of aiosmtpd's, and msgs/s at least the best peer's."""
    targets = []
    rows = summarize(measurements, subject)
    for mode in dict.fromkeys(r.mode for r in rows):
        # another version of elemta (elemta@DIR) or elemta with metrics on (elemta-metrics) is
        # a reference, not a peer to beat
        peers = [r for r in rows if r.mode == mode and r.server != subject
                 and not r.server.startswith((f"{subject}@", f"{subject}-"))]
        if not any(r.server == subject and r.mode == mode for r in rows) or not peers:
            continue
        for r in peers:
            if r.server == "aiosmtpd":
                # r.cpu_ratio is aiosmtpd / subject; the target is subject / aiosmtpd <= 2/3
                own = 1 / r.cpu_ratio.median if r.cpu_ratio.median else math.nan
                targets.append(Target(mode, f"CPU/msg {subject}/aiosmtpd = {own:.2f} (target <= 0.67)",
                                      own <= 2 / 3))
        best = max(peers, key=lambda r: r.rate)
        own_rate = 1 / best.rate_ratio.median if best.rate_ratio.median else math.nan
        targets.append(Target(mode, f"msgs/s {subject}/{best.server} (best peer) = {own_rate:.2f} "
                                    "(target >= 1.00)", own_rate >= 1))
    return targets


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt_ratio(r: Ratio) -> str:
    if math.isnan(r.median):
        return "-"
    return f"{r.median:.2f} ({r.low:.2f}-{r.high:.2f})"


def format_table(rows: Sequence[Row], baseline: str) -> str:
    """A fixed-width text table, one line per (mode, server)."""
    head = ("mode", "server", "rounds", "msgs/s", "CPU ms/msg", "p50 ms", "p99 ms",
            f"msgs/s vs {baseline}", f"CPU vs {baseline}", "failed")
    lines = [head] + [
        (r.mode, r.server, str(r.rounds), _fmt(r.rate), _fmt(r.cpu_ms, 2), _fmt(r.p50_ms, 1),
         _fmt(r.p99_ms, 1), _fmt_ratio(r.rate_ratio), _fmt_ratio(r.cpu_ratio), str(r.failed))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
