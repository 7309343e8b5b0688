"""The installer's edits to elemta.toml, as a pure function on the text: tomlkit
keeps the admin's comments, order and layout; only the changed values move."""

from __future__ import annotations

import tomlkit
import tomlkit.exceptions
from tomlkit import TOMLDocument
from tomlkit.items import Table

from certbot_elemta._internal import constants


def _table(container: TOMLDocument | Table, name: str, super_table: bool = False) -> Table:
    """``container[name]``, created as a table if it is missing."""
    if name not in container:
        container[name] = tomlkit.table(is_super_table=super_table)
    table = container[name]
    assert isinstance(table, Table)
    return table


def plan_changes(text: str, domain: str) -> tuple[str, str]:
    """Edit elemta.toml so the daemon serves the certificate of ``domain``.

    Turns ``[tls] enabled`` on when it is false and sets ``[tls.letsencrypt]
    domain`` when it is missing or empty. Returns the new text and notes saying
    what changed; when nothing needs changing, the same text and empty notes.
    Raises ``ValueError`` if the text is not TOML (config_test reports that first).
    """
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ValueError(f"not valid TOML: {exc}") from exc
    notes = ""
    tls = doc.get("tls")
    if isinstance(tls, Table) and tls.get("enabled") is False:
        tls["enabled"] = True
        notes += constants.SAVE_NOTES_TLS_ENABLED
    letsencrypt = tls.get("letsencrypt") if isinstance(tls, Table) else None
    if not isinstance(letsencrypt, Table) or not letsencrypt.get("domain"):
        tls = _table(doc, "tls", super_table=not isinstance(tls, Table))
        _table(tls, "letsencrypt")["domain"] = domain
        notes += constants.SAVE_NOTES_DOMAIN.format(domain=domain)
    if not notes:
        return text, ""
    return tomlkit.dumps(doc), notes
