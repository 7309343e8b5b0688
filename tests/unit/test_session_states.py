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
    first_state,
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


def test_implicit_tls_starts_waiting_for_the_handshake() -> None:
    """On the implicit-TLS port a connection starts in its own handshake state; the handshake
    leads to INIT (EHLO needed) and nothing but the handshake or the end leaves that state."""
    assert first_state(implicit_tls=True) is State.IMPLICIT_TLS_PENDING
    assert first_state(implicit_tls=False) is State.INIT
    assert next_state(State.IMPLICIT_TLS_PENDING, Event.TLS_DONE) is State.INIT
    assert {event for (state, event) in TRANSITIONS if state is State.IMPLICIT_TLS_PENDING} == {
        Event.TLS_DONE, Event.CLOSE, Event.LOST}


def test_starttls_only_from_greeted() -> None:
    """STARTTLS is a transition of the table: from GREETED only, to TLS_PENDING, whose only
    ways out are the handshake and the end."""
    assert {state for (state, event) in TRANSITIONS if event is Event.STARTTLS} == {State.GREETED}
    assert {event for (state, event) in TRANSITIONS if state is State.TLS_PENDING} == {
        Event.TLS_DONE, Event.CLOSE, Event.LOST}


@pytest.mark.parametrize("state", [s for s in State if s not in (State.CLOSING, State.CLOSED)],
                         ids=lambda s: s.value)
def test_the_session_may_close_from_any_open_state(state: State) -> None:
    """Closing (QUIT, errors, timeouts, shutdown) leads from every open state to CLOSING."""
    assert next_state(state, Event.CLOSE) is State.CLOSING


@pytest.mark.parametrize("state", [s for s in State if s is not State.CLOSED], ids=lambda s: s.value)
def test_the_connection_may_go_from_any_state(state: State) -> None:
    """A lost connection leads from every state to CLOSED."""
    assert next_state(state, Event.LOST) is State.CLOSED


def test_closed_is_final_and_closing_only_waits_for_the_end() -> None:
    """Nothing leaves CLOSED; CLOSING leads only to CLOSED (no second close, no commands)."""
    assert [event for (state, event) in TRANSITIONS if state is State.CLOSED] == []
    assert [event for (state, event) in TRANSITIONS if state is State.CLOSING] == [Event.LOST]
    with pytest.raises(TransitionError):
        next_state(State.CLOSING, Event.CLOSE)
