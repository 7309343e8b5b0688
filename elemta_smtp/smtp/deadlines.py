"""When a session must act without hearing from the client: a pure decision on times.

The session (session.py) arms no timer. It notes when things happened (read from
the ``now`` it is given: the client's last input or the end of our own wait, the
first byte of an unfinished command line) and asks ``next_deadline`` what is due
next and when; the adapter arms one timer at that moment and calls
``Session.timer_fired(now)``, which asks ``due``. Tests pass the times.
Every deadline lies one ``idle_timeout`` after something that already happened, so
input only ever moves it later: the adapter never moves its timer forward, it lets
it fire, learns the later deadline, and arms again (no timer update per packet).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from elemta_smtp.smtp.states import COMMAND_STATES, HANDSHAKE_STATES, State

_DIALOGUE_STATES = COMMAND_STATES | {State.DATA}  # waiting for the client's commands or text


class Expiry(enum.Enum):
    IDLE = "idle"                  # the client said nothing for idle_timeout: 421, close
    SLOW_LINE = "slow-line"        # one command line took longer than idle_timeout: 421, close
    NO_HANDSHAKE = "no-handshake"  # the TLS handshake did not finish in time: drop
    NOT_READING = "not-reading"    # we closed, the client still holds on (reads nothing): drop


class Deadline(NamedTuple):
    """At ``at`` (seconds, the session's clock), ``expiry`` is due."""

    at: float
    expiry: Expiry


def next_deadline(state: State, idle_timeout: float, active_at: float,
                  line_started: float | None) -> Deadline | None:
    """The session's next deadline, or None while nothing can be due.

    ``active_at``: when the client last sent something, or when a wait that was not
    the client's ended (connect, TLS handshake done, a delivery answered, the close).
    ``line_started``: when the unfinished command line began, if there is one.
    """
    if state in _DIALOGUE_STATES:
        if line_started is not None and line_started < active_at:  # bytes trickle, no line end
            return Deadline(line_started + idle_timeout, Expiry.SLOW_LINE)
        return Deadline(active_at + idle_timeout, Expiry.IDLE)
    if state in HANDSHAKE_STATES:
        return Deadline(active_at + idle_timeout, Expiry.NO_HANDSHAKE)
    if state is State.CLOSING:
        return Deadline(active_at + idle_timeout, Expiry.NOT_READING)
    return None  # delivering (waiting for our own disk is not the client's idleness), or gone


def due(deadline: Deadline | None, now: float) -> Expiry | None:
    """What is due at ``now``: the deadline's expiry once it is reached, else None."""
    if deadline is None or now < deadline.at:
        return None
    return deadline.expiry
