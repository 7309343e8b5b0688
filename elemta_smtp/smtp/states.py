"""The SMTP session's states and every rule about what may come next, in one place.

``SEQUENCE`` says, for the commands that depend on state, which reply a
command gets in each state (``None``: go ahead). ``TRANSITIONS`` says where
each event leads, closing and TLS included. The session (session.py) consults
these tables and nothing else decides ordering, so the whole of RFC 5321 4.1.4 /
RFC 3207 ordering can be read and tested here.
"""

from __future__ import annotations

import enum

from elemta_smtp.errors import ElemtaError
from elemta_smtp.smtp import replies


class State(enum.Enum):
    INIT = "init"                # connected (or TLS just started): HELO/EHLO needed
    GREETED = "greeted"          # HELO/EHLO done, no mail transaction
    MAIL = "mail"                # MAIL FROM accepted, no recipient yet
    RCPT = "rcpt"                # at least one recipient accepted
    DATA = "data"                # reading message text up to CRLF.CRLF
    DELIVERING = "delivering"    # message complete, waiting for the sink
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS sent; input is discarded until the handshake
    IMPLICIT_TLS_PENDING = "implicit-tls-pending"  # implicit-TLS port: handshake not done yet
    CLOSING = "closing"          # the session ended the dialogue; the client has not let go yet
    CLOSED = "closed"            # the connection is gone

    # Members are singletons compared by identity: hash them by identity too (in C),
    # not by Enum's Python-level hash of the name (the tables below are hit per command).
    __hash__ = object.__hash__


class Event(enum.Enum):
    HELLO = "hello"              # HELO or EHLO accepted
    RESET = "reset"              # RSET
    MAIL = "mail"                # MAIL FROM accepted
    RCPT = "rcpt"                # RCPT TO accepted
    DATA = "data"                # DATA accepted, 354 sent
    END_OF_DATA = "end-of-data"  # CRLF.CRLF seen, message handed over
    REFUSED = "refused"          # CRLF.CRLF seen, message refused (size, content)
    DELIVERED = "delivered"      # the sink answered (stored or failed)
    STARTTLS = "starttls"        # 220 Ready to start TLS sent
    TLS_DONE = "tls-done"        # handshake finished: everything is forgotten
    CLOSE = "close"              # the session says goodbye (QUIT, errors, timeout, shutdown)
    LOST = "lost"                # the connection is gone

    __hash__ = object.__hash__  # see State


COMMAND_STATES = frozenset({State.INIT, State.GREETED, State.MAIL, State.RCPT})
#: States in which bytes from the client are read (elsewhere they are discarded).
READING_STATES = COMMAND_STATES | {State.DATA, State.DELIVERING}
#: States waiting for a TLS handshake to finish.
HANDSHAKE_STATES = frozenset({State.TLS_PENDING, State.IMPLICIT_TLS_PENDING})

_S = State
# command -> state -> reply to send instead of running it (None: allowed).
# Commands not listed (HELO, EHLO, RSET, NOOP, QUIT, VRFY, HELP) run in any command state.
SEQUENCE: dict[str, dict[State, bytes | None]] = {
    "MAIL": {_S.INIT: replies.NEED_HELO, _S.GREETED: None,
             _S.MAIL: replies.NESTED_MAIL, _S.RCPT: replies.NESTED_MAIL},
    "RCPT": {_S.INIT: replies.NEED_MAIL, _S.GREETED: replies.NEED_MAIL,
             _S.MAIL: None, _S.RCPT: None},
    "DATA": {_S.INIT: replies.NEED_MAIL, _S.GREETED: replies.NEED_MAIL,
             _S.MAIL: replies.NO_VALID_RECIPIENTS, _S.RCPT: None},
    "STARTTLS": {_S.INIT: replies.NEED_EHLO, _S.GREETED: None,
                 _S.MAIL: replies.TLS_IN_TRANSACTION, _S.RCPT: replies.TLS_IN_TRANSACTION},
}

TRANSITIONS: dict[tuple[State, Event], State] = {
    (_S.INIT, Event.HELLO): _S.GREETED,
    (_S.GREETED, Event.HELLO): _S.GREETED,
    (_S.MAIL, Event.HELLO): _S.GREETED,
    (_S.RCPT, Event.HELLO): _S.GREETED,
    (_S.INIT, Event.RESET): _S.INIT,
    (_S.GREETED, Event.RESET): _S.GREETED,
    (_S.MAIL, Event.RESET): _S.GREETED,
    (_S.RCPT, Event.RESET): _S.GREETED,
    (_S.GREETED, Event.MAIL): _S.MAIL,
    (_S.MAIL, Event.RCPT): _S.RCPT,
    (_S.RCPT, Event.RCPT): _S.RCPT,
    (_S.RCPT, Event.DATA): _S.DATA,
    (_S.DATA, Event.END_OF_DATA): _S.DELIVERING,
    (_S.DATA, Event.REFUSED): _S.GREETED,
    (_S.DELIVERING, Event.DELIVERED): _S.GREETED,
    (_S.GREETED, Event.STARTTLS): _S.TLS_PENDING,
    (_S.TLS_PENDING, Event.TLS_DONE): _S.INIT,
    (_S.IMPLICIT_TLS_PENDING, Event.TLS_DONE): _S.INIT,
    # The session may end the dialogue from any state the connection is open in...
    **{(state, Event.CLOSE): _S.CLOSING for state in State if state not in (_S.CLOSING, _S.CLOSED)},
    # ...and the connection may go at any moment.
    **{(state, Event.LOST): _S.CLOSED for state in State if state is not _S.CLOSED},
}


class TransitionError(ElemtaError):
    """A bug: the session tried a transition the table does not allow."""


def first_state(implicit_tls: bool) -> State:
    """Where a new connection starts: on the implicit-TLS port, waiting for the handshake."""
    return State.IMPLICIT_TLS_PENDING if implicit_tls else State.INIT


def next_state(state: State, event: Event) -> State:
    """Where ``event`` leads from ``state``."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(f"no transition from {state.value} on {event.value}") from None


def sequence_error(command: str, state: State) -> bytes | None:
    """The 503/554 reply ``command`` gets in ``state``, or None when it may run."""
    rules = SEQUENCE.get(command)
    return None if rules is None else rules[state]
