"""README.rst, CHANGELOG.rst and docs/*.rst are valid reStructuredText: no docutils
warning (a broken literal block or table renders as garbage on PyPI and GitHub)."""

from __future__ import annotations

import io
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.rst", ROOT / "CHANGELOG.rst", *sorted((ROOT / "docs").glob("*.rst"))]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_document_renders_without_warnings(path: Path) -> None:
    """docutils reads the file without a single warning or error."""
    messages = io.StringIO()
    docutils.core.publish_doctree(path.read_text(), source_path=str(path), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": messages})
    assert messages.getvalue() == ""


def test_a_broken_literal_block_is_caught(tmp_path: Path) -> None:
    """The check above is real: a literal block followed by an unindented line warns."""
    messages = io.StringIO()
    docutils.core.publish_doctree("Text::\n\n    code\nnot indented\n", settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": messages})
    assert "Literal block ends without a blank line" in messages.getvalue()
