"""acme/turns.py: the manager's checks never overlap; a notice check asked for while a
check runs comes once after it."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from elemta_smtp.acme.turns import OneAtATime


def fired(d: Deferred[None]) -> bool:
    return bool(d.called)


def busy(turns: OneAtATime) -> bool:
    return turns.busy is not None


class Gate:
    """Work that runs until the test opens its gate; counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.gates: list[Deferred[None]] = []

    async def work(self) -> None:
        self.runs += 1
        gate: Deferred[None] = Deferred()
        self.gates.append(gate)
        await gate


def test_a_request_while_busy_waits_and_starts_nothing() -> None:
    """A second run while one is busy starts no work and fires when the first ends."""
    turns, gate = OneAtATime(), Gate()
    first = turns.run(gate.work, "check")
    second = turns.run(gate.work, "check")
    assert gate.runs == 1 and not fired(first) and not fired(second)
    gate.gates[0].callback(None)
    assert fired(first) and fired(second) and turns.busy is None
    assert gate.runs == 1


def test_again_runs_once_after_the_busy_work() -> None:
    """Several ``again`` requests while busy make exactly one run after it."""
    turns, check, notice = OneAtATime(), Gate(), Gate()
    turns.run(check.work, "check")
    turns.run(notice.work, "notice check", again=True)
    turns.run(notice.work, "notice check", again=True)
    assert notice.runs == 0
    check.gates[0].callback(None)
    assert notice.runs == 1 and busy(turns)
    notice.gates[0].callback(None)
    assert notice.runs == 1 and not busy(turns)


def test_a_failure_is_logged_and_frees_the_turn() -> None:
    """Work that raises is logged (not left as an unhandled error) and the next run starts."""
    turns, gate = OneAtATime(), Gate()

    async def broken() -> None:
        raise RuntimeError("boom")

    done = turns.run(broken, "check")
    assert fired(done) and turns.busy is None
    turns.run(gate.work, "check")
    assert gate.runs == 1
