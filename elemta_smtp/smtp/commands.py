"""Pure parsers for SMTP command lines: bytes in, plain values or a reply out.

A parser that refuses raises ``CommandRejected`` carrying the reply to send,
so the session never builds reply text itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from elemta_smtp.errors import ElemtaError
from elemta_smtp.smtp import replies

MAX_COMMAND_LINE = 512      # octets including CRLF (RFC 5321 4.5.3.1.4)
MAX_LOCAL_PART = 64         # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255            # RFC 5321 4.5.3.1.2
MAX_PATH = 256              # RFC 5321 4.5.3.1.3

# Anything but printable ASCII and space: control characters, NUL, DEL, 8-bit.
_BAD_CHARS = re.compile(rb"[^\x20-\x7e]")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_MAILBOX = re.compile(rf"^(?P<local>{_DOT_ATOM}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})$")
# Recipients become Maildir folder names: no quoted local parts and no "/".
_RCPT_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+)*$")
_PATH = re.compile(r"^(?P<keyword>FROM|TO):[ ]*<(?P<path>[^<>]*)>(?:[ ]+(?P<params>.*))?$", re.I)


class CommandRejected(ElemtaError):
    """A command cannot run; ``reply`` says why to the client."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(reply.decode("ascii", "replace").strip())
        self.reply = reply


class SizeExceeded(CommandRejected):
    """MAIL FROM declared a SIZE= over ``max_message_size``: 552, and a log line."""

    def __init__(self, sender: str, size: int, limit: int) -> None:
        super().__init__(replies.SIZE_EXCEEDED)
        self.sender, self.size, self.limit = sender, size, limit


@dataclass(frozen=True, slots=True)
class MailFrom:
    sender: str               # "" for the null reverse-path <>
    size: int | None          # SIZE= (RFC 1870), when given


@dataclass(frozen=True, slots=True)
class Mailbox:
    local: str
    domain: str


def split_command(line: bytes) -> tuple[str, str]:
    """``b"MAIL FROM:<a@b>"`` -> ``("MAIL", "FROM:<a@b>")``; rejects control and 8-bit bytes."""
    if _BAD_CHARS.search(line):
        raise CommandRejected(replies.BAD_CHARACTERS)
    text = line.decode("ascii")
    verb, _, argument = text.partition(" ")
    return verb.upper(), argument.strip(" ")


def parse_hello(argument: str, extended: bool) -> str:
    """The client's name from HELO/EHLO: one word, a domain or an address literal."""
    if not argument or " " in argument:
        raise CommandRejected(replies.SYNTAX_EHLO if extended else replies.SYNTAX_HELO)
    return argument


def parse_mailbox(address: str) -> Mailbox | None:
    """``local@domain`` split in two, or None when the syntax is not RFC 5321's."""
    if len(address) > MAX_PATH:
        return None
    match = _MAILBOX.match(address)
    if match is None:
        return None
    local, domain = match.group("local"), match.group("domain")
    if len(local) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN:
        return None
    return Mailbox(local, domain)


def _path(argument: str, keyword: str, syntax: bytes) -> tuple[str, str]:
    match = _PATH.match(argument)
    if match is None or match.group("keyword").upper() != keyword:
        raise CommandRejected(syntax)
    return match.group("path"), match.group("params") or ""


def _parameters(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        key = key.upper()
        if not key or key in params or (sep and not value):
            raise CommandRejected(replies.BAD_PARAMETER_VALUE)
        params[key] = value if sep else None
    return params


def parse_mail(argument: str, extended: bool, max_size: int) -> MailFrom:
    """MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]."""
    path, param_text = _path(argument, "FROM", replies.SYNTAX_MAIL)
    if path and parse_mailbox(path) is None:
        raise CommandRejected(replies.BAD_SENDER_SYNTAX)
    params = _parameters(param_text)
    if params and not extended:
        raise CommandRejected(replies.UNKNOWN_PARAMETER)
    size: int | None = None
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise CommandRejected(replies.BAD_PARAMETER_VALUE)
            size = int(value)
            if size > max_size:
                raise SizeExceeded(path, size, max_size)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise CommandRejected(replies.UNKNOWN_PARAMETER)
        else:
            raise CommandRejected(replies.UNKNOWN_PARAMETER)
    return MailFrom(path, size)


def parse_rcpt(argument: str) -> Mailbox:
    """RCPT TO:<local@domain> or RCPT TO:<postmaster> (domain left empty); no parameters."""
    path, param_text = _path(argument, "TO", replies.SYNTAX_RCPT)
    if param_text:
        _parameters(param_text)
        raise CommandRejected(replies.UNKNOWN_PARAMETER)
    if path.lower() == "postmaster":
        return Mailbox("postmaster", "")
    mailbox = parse_mailbox(path)
    if mailbox is None or not _RCPT_LOCAL.match(mailbox.local):
        raise CommandRejected(replies.BAD_RECIPIENT_SYNTAX)
    return mailbox


def require_no_argument(argument: str) -> None:
    """DATA, RSET, QUIT and STARTTLS take nothing after the verb."""
    if argument:
        raise CommandRejected(replies.SYNTAX_NO_PARAMETERS)
