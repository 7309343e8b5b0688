"""The state table (states.py): what may come next, and where each event leads."""

from __future__ import annotations

import pytest

from elemta_smtp.smtp import replies
from elemta_smtp.smtp.states import (
    COMMAND_STATES,
    TRANSITIONS,
    Event,
    State,
    TransitionError,
    next_state,
    sequence_error,
)

SEQUENCE_TABLE = [
    ("MAIL", State.INIT, replies.NEED_HELO),
    ("MAIL", State.GREETED, None),
    ("MAIL", State.MAIL, replies.NESTED_MAIL),
    ("MAIL", State.RCPT, replies.NESTED_MAIL),
    ("RCPT", State.INIT, replies.NEED_MAIL),
    ("RCPT", State.GREETED, replies.NEED_MAIL),
    ("RCPT", State.MAIL, None),
    ("RCPT", State.RCPT, None),
    ("DATA", State.INIT, replies.NEED_MAIL),
    ("DATA", State.GREETED, replies.NEED_MAIL),
    ("DATA", State.MAIL, replies.NO_VALID_RECIPIENTS),
    ("DATA", State.RCPT, None),
    ("STARTTLS", State.INIT, replies.NEED_EHLO),
    ("STARTTLS", State.GREETED, None),
    ("STARTTLS", State.MAIL, replies.TLS_IN_TRANSACTION),
    ("STARTTLS", State.RCPT, replies.TLS_IN_TRANSACTION),
]


@pytest.mark.parametrize(("command", "state", "expected"), SEQUENCE_TABLE,
                         ids=[f"{c}-in-{s.value}" for c, s, _ in SEQUENCE_TABLE])
def test_sequence(command: str, state: State, expected: bytes | None) -> None:
    """Order-dependent commands run only where RFC 5321 / RFC 3207 allow them."""
    assert sequence_error(command, state) == expected


@pytest.mark.parametrize("command", ["HELO", "EHLO", "RSET", "NOOP", "QUIT", "VRFY", "HELP"])
def test_anytime_commands(command: str) -> None:
    """HELO, EHLO, RSET, NOOP, QUIT, VRFY and HELP may come in any command state."""
    assert all(sequence_error(command, state) is None for state in COMMAND_STATES)


def test_hello_always_leads_to_greeted() -> None:
    """HELO/EHLO from any command state starts afresh in GREETED."""
    assert {next_state(s, Event.HELLO) for s in COMMAND_STATES} == {State.GREETED}


def test_tls_forgets_everything() -> None:
    """After the STARTTLS handshake the session is back to INIT (EHLO needed)."""
    assert next_state(State.GREETED, Event.STARTTLS) is State.TLS_PENDING
    assert next_state(State.TLS_PENDING, Event.TLS_DONE) is State.INIT


def test_message_cycle() -> None:
    """MAIL, RCPT, DATA, end of data and delivery bring the session back to GREETED."""
    state = State.GREETED
    for event in (Event.MAIL, Event.RCPT, Event.RCPT, Event.DATA, Event.END_OF_DATA, Event.DELIVERED):
        state = next_state(state, event)
    assert state is State.GREETED
    assert next_state(State.DATA, Event.REFUSED) is State.GREETED


@pytest.mark.parametrize(("state", "event"), [
    (State.INIT, Event.MAIL), (State.DATA, Event.MAIL), (State.DELIVERING, Event.HELLO),
    (State.TLS_PENDING, Event.HELLO), (State.CLOSED, Event.RESET), (State.RCPT, Event.STARTTLS),
], ids=["mail-in-init", "mail-in-data", "hello-while-delivering", "hello-before-handshake",
        "reset-when-closed", "starttls-in-transaction"])
def test_forbidden_transitions(state: State, event: Event) -> None:
    """A transition missing from the table is refused loudly (a bug, not a client error)."""
    assert (state, event) not in TRANSITIONS
    with pytest.raises(TransitionError):
        next_state(state, event)
