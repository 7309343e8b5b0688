"""The installer's elemta.toml edits, as a pure function on text."""

from __future__ import annotations

import pytest

from certbot_elemta._internal.tomledit import plan_changes


@pytest.mark.parametrize(("before", "after"), [
    pytest.param(
        '# mine\n[tls]\nenabled = false  # off\n\n[tls.letsencrypt]\ndomain = ""  # later\n',
        '# mine\n[tls]\nenabled = true  # off\n\n[tls.letsencrypt]\ndomain = "mail.example.com"  # later\n',
        id="both-edits-keep-comments"),
    pytest.param(
        '[server]\nhostname = "a.example.com"\n',
        '[server]\nhostname = "a.example.com"\n\n[tls.letsencrypt]\ndomain = "mail.example.com"\n',
        id="no-tls-tables"),
    pytest.param(
        '[tls.letsencrypt]\ncache_dir = "/c"\n',
        '[tls.letsencrypt]\ncache_dir = "/c"\ndomain = "mail.example.com"\n',
        id="domain-missing"),
    pytest.param(
        '[tls]\nlisten_addr = ":465"\n',
        '[tls]\nlisten_addr = ":465"\n\n[tls.letsencrypt]\ndomain = "mail.example.com"\n',
        id="letsencrypt-table-missing"),
])
def test_edits_only_what_is_needed(before: str, after: str) -> None:
    """[tls] enabled false -> true and an empty domain is set; everything else stays as written."""
    text, notes = plan_changes(before, "mail.example.com")
    assert text == after
    assert "domain" in notes


@pytest.mark.parametrize("before", [
    pytest.param('[tls.letsencrypt]\ndomain = "other.example.com"\n', id="other-domain-kept"),
    pytest.param('[tls]\nenabled = true\n[tls.letsencrypt]\ndomain = "mail.example.com"\n', id="done"),
])
def test_no_change_means_same_text(before: str) -> None:
    """An admin's domain is never overwritten; nothing to do gives the same text, no notes."""
    assert plan_changes(before, "mail.example.com") == (before, "")


def test_not_toml_is_value_error() -> None:
    """Text that is not TOML is refused, not rewritten."""
    with pytest.raises(ValueError, match="not valid TOML"):
        plan_changes("[tls\n", "mail.example.com")
