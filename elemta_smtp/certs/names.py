"""DNS names: what a valid one is, how certificate names (with wildcards) match a
server name, and how a server name picks one of several certificates (SNI)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")

T = TypeVar("T")


def normalize(name: str) -> str:
    """Lower-case, without a trailing dot: the form names are compared in."""
    return name.strip().lower().rstrip(".")


def is_dns_name(name: str) -> bool:
    """True for a plain host name such as ``mail.example.com`` (no wildcard, no IP syntax tricks)."""
    return bool(_DNS_NAME.match(name))


def name_matches(pattern: str, name: str) -> bool:
    """Does a certificate name (``mail.example.com`` or ``*.example.com``) cover ``name``?

    A wildcard stands for exactly one whole left-most label: ``*.example.com``
    covers ``mail.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    """
    pattern, name = normalize(pattern), normalize(name)
    if not name:
        return False
    if pattern.startswith("*."):
        first, dot, rest = name.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:] and first != "*"
    return pattern == name


def covers(names: Iterable[str], name: str) -> bool:
    """Does any of a certificate's names cover ``name``?"""
    return any(name_matches(p, name) for p in names)


@dataclass(frozen=True)
class NameTable(Generic[T]):
    """Which served item answers which server name; ``default`` when none does."""

    exact: Mapping[str, T]
    wildcard: Mapping[str, T]  # keyed by the part after "*."
    default: T

    def lookup(self, server_name: str | None) -> T:
        """The item for a client's SNI name (None or unknown: the default)."""
        if not server_name:
            return self.default
        name = normalize(server_name)
        found = self.find(name)
        return self.default if found is None else found

    def find(self, name: str) -> T | None:
        """The item whose names cover ``name``, or None."""
        name = normalize(name)
        if name in self.exact:
            return self.exact[name]
        first, dot, rest = name.partition(".")
        if first and dot:
            return self.wildcard.get(rest)
        return None


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One servable item: its own name (a live/<name>.pem file name, or None) and its SAN names."""

    item: T
    own_name: str | None
    names: tuple[str, ...]


def build_table(candidates: Iterable[Candidate[T]], preferred: Iterable[str]) -> NameTable[T] | None:
    """Build the SNI table. Earlier candidates win a name; a file wins its own name first,
    but a candidate without one (the hand-managed [tls] cert_file) claims all its names first.

    The default is the first candidate covering a ``preferred`` name (the
    Let's Encrypt domain, then the server hostname), else the first candidate.
    None when there is nothing to serve.
    """
    ordered = list(candidates)
    if not ordered:
        return None
    exact: dict[str, T] = {}
    wildcard: dict[str, T] = {}
    for c in ordered:  # first pass: a file's own name, or all names of a file with none (hand-managed)
        for name in map(normalize, c.names if c.own_name is None else (c.own_name,)):
            if not name.startswith("*."):
                exact.setdefault(name, c.item)
    for c in ordered:
        for name in map(normalize, c.names):
            if name.startswith("*."):
                wildcard.setdefault(name[2:], c.item)
            else:
                exact.setdefault(name, c.item)
    table = NameTable(exact, wildcard, ordered[0].item)
    for name in preferred:
        found = table.find(name) if name else None
        if found is not None:
            return NameTable(exact, wildcard, found)
    return table
