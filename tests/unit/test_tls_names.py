"""Name matching and SNI selection (elemta_smtp/tls/names.py), pure."""

from __future__ import annotations

import pytest

from elemta_smtp.certs.names import Candidate, build_table, name_matches


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    pytest.param("mail.example.com", "mail.example.com", True, id="exact"),
    pytest.param("mail.example.com", "MAIL.Example.com.", True, id="case-and-trailing-dot"),
    pytest.param("mail.example.com", "example.com", False, id="different"),
    pytest.param("*.example.com", "mail.example.com", True, id="wildcard-one-label"),
    pytest.param("*.example.com", "example.com", False, id="wildcard-needs-a-label"),
    pytest.param("*.example.com", "a.b.example.com", False, id="wildcard-not-two-labels"),
    pytest.param("*.example.com", ".example.com", False, id="wildcard-empty-label"),
    pytest.param("m*.example.com", "mail.example.com", False, id="partial-wildcard-unsupported"),
    pytest.param("mail.example.com", "", False, id="empty-name"),
])
def test_name_matches(pattern: str, name: str, expected: bool) -> None:
    """A certificate name covers a server name exactly, or by a one-label wildcard."""
    assert name_matches(pattern, name) is expected


def table(*candidates: tuple[str, str | None, tuple[str, ...]], preferred: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    built = build_table([Candidate(item, own, names) for item, own, names in candidates], preferred)
    assert built is not None
    return built


def test_empty_table_is_none() -> None:
    """Nothing to serve builds no table (the caller falls back to the bootstrap)."""
    assert build_table([], ("mail.example.com",)) is None


def test_sni_picks_by_name_and_wildcard() -> None:
    """Exact names win over wildcards; a wildcard answers any one-label name below it."""
    t = table(("wild", "example.com", ("example.com", "*.example.com")),
              ("mail", "mail.example.com", ("mail.example.com",)),
              preferred=("mail.example.com",))
    assert t.lookup("mail.example.com") == "mail"
    assert t.lookup("smtp.example.com") == "wild"
    assert t.lookup("example.com") == "wild"
    assert t.lookup("a.b.example.com") == "mail"  # unknown: the default
    assert t.lookup(None) == "mail"


def test_default_prefers_domain_then_hostname_then_first() -> None:
    """The default covers the first preferred name that any candidate covers, else is the first candidate."""
    c = (("a", "a.example.com", ("a.example.com",)), ("b", "b.example.com", ("b.example.com",)))
    assert table(*c, preferred=("b.example.com", "a.example.com")).default == "b"
    assert table(*c, preferred=("zzz.example.com", "a.example.com")).default == "a"
    assert table(*c, preferred=("zzz.example.com",)).default == "a"


def test_earlier_candidate_wins_shared_name() -> None:
    """When two certificates share a name the earlier one (the hand-managed one) answers it."""
    t = table(("hand", None, ("mail.example.com",)), ("live", "mail.example.com", ("mail.example.com",)))
    assert t.lookup("mail.example.com") == "hand"


def test_file_name_beats_other_files_san() -> None:
    """live/<name>.pem answers <name> even if an earlier file also lists it in its SAN."""
    t = table(("multi", "a.example.com", ("a.example.com", "b.example.com")),
              ("b", "b.example.com", ("b.example.com",)))
    assert t.lookup("b.example.com") == "b"
