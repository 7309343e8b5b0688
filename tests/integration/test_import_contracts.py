"""The layering contracts in .importlinter are real: `lint-imports` passes on the tree, and
each contract breaks, naming the import, when a copy of the tree gets one forbidden import."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
#: What certbot_elemta may import from elemta_smtp (the house plan: config reading, the
#: cache contract, the daemon handle).
PLUGIN_MAY_IMPORT = {"config", "tomlread", "schema", "units", "errors", "cache", "daemon"}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages found first from ``cwd`` (a copy, or the tree)."""
    if not LINT_IMPORTS.exists():
        pytest.skip(f"{LINT_IMPORTS} is missing: run ./dev setup (the test extra has import-linter)")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of both packages and the contracts file."""
    for package in ("elemta_smtp", "certbot_elemta"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_every_contract() -> None:
    """`lint-imports` (as ./dev test runs it) passes on the repository."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_an_untouched_copy_keeps_every_contract(tree: Path) -> None:
    """The copy the other tests break is what lint-imports reads (it passes untouched)."""
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "line", "contract", "shown"), [
    pytest.param("elemta_smtp/units.py", "import certbot.errors",
                 "elemta_smtp never imports certbot", "elemta_smtp.units -> certbot",
                 id="daemon-imports-certbot"),
    pytest.param("elemta_smtp/cache/layout.py", "import acme.challenges",
                 "elemta_smtp never imports certbot", "elemta_smtp.cache.layout -> acme",
                 id="daemon-imports-pypi-acme"),
    pytest.param("elemta_smtp/errors.py", "import certbot_elemta",
                 "elemta_smtp never imports certbot", "elemta_smtp.errors -> certbot_elemta",
                 id="daemon-imports-the-plugin"),
    pytest.param("certbot_elemta/_internal/success.py", "import elemta_smtp.tls.report",
                 "certbot_elemta imports from elemta_smtp only",
                 "certbot_elemta._internal.success -> elemta_smtp.tls.report",
                 id="plugin-imports-tls"),
    pytest.param("certbot_elemta/_internal/http01.py", "from elemta_smtp.acme import http01",
                 "certbot_elemta imports from elemta_smtp only",
                 "certbot_elemta._internal.http01 -> elemta_smtp.acme.http01",
                 id="plugin-imports-the-daemon-site"),
    pytest.param("elemta_smtp/smtp/states.py", "import twisted.internet.defer",
                 "the sans-IO SMTP modules", "elemta_smtp.smtp.states -> twisted",
                 id="sans-io-imports-twisted"),
    pytest.param("elemta_smtp/smtp/replies.py", "import os",
                 "the sans-IO SMTP modules", "elemta_smtp.smtp.replies -> os",
                 id="sans-io-imports-os"),
    pytest.param("elemta_smtp/smtp/dataframe.py", "import elemta_smtp.net.tcp",
                 "the sans-IO SMTP modules", "elemta_smtp.net.tcp -> twisted",
                 id="sans-io-imports-twisted-indirectly"),
    pytest.param("elemta_smtp/smtp/session.py", "import elemta_smtp.metrics",
                 "the sans-IO SMTP modules", "elemta_smtp.smtp.session -> elemta_smtp.metrics",
                 id="sans-io-counts-itself"),
    pytest.param("elemta_smtp/metrics.py", "import elemta_smtp.tls.context",
                 "nothing imports upward", "elemta_smtp.metrics -> elemta_smtp.tls.context",
                 id="metrics-imports-tls"),
    pytest.param("elemta_smtp/config.py", "import elemta_smtp.service",
                 "nothing imports upward", "elemta_smtp.config -> elemta_smtp.service",
                 id="config-imports-service"),
    pytest.param("elemta_smtp/cache/layout.py", "import elemta_smtp.daemon",
                 "nothing imports upward", "elemta_smtp.cache.layout -> elemta_smtp.daemon",
                 id="cache-imports-daemon"),
    pytest.param("elemta_smtp/tls/sources.py", "import elemta_smtp.smtp.replies",
                 "nothing imports upward", "elemta_smtp.tls.sources -> elemta_smtp.smtp.replies",
                 id="tls-imports-its-sibling-smtp"),
])
def test_each_contract_breaks_on_a_forbidden_import(tree: Path, module: str, line: str,
                                                    contract: str, shown: str) -> None:
    """One forbidden import added to a copy breaks its contract, and the report names it."""
    add_line(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and shown in broken, result.stdout


def test_a_new_module_must_find_its_layer(tree: Path) -> None:
    """The layers contract is exhaustive: a new top-level module of elemta_smtp fails until
    it is placed in .importlinter."""
    (tree / "elemta_smtp" / "newroom.py").write_text('"""a room not on the plan"""\n')
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "elemta_smtp.newroom" in result.stdout + result.stderr


def test_the_plugin_contract_names_every_other_module() -> None:
    """Contract 2 forbids every top-level module of elemta_smtp except the contract ones, so a
    new module is forbidden to the plugin from the start."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    forbidden = {m.strip().removeprefix("elemta_smtp.") for m in config[
        "importlinter:contract:plugin-imports-the-contract-only"]["forbidden_modules"].split()}
    children = {p.stem if p.suffix == ".py" else p.name
                for p in (ROOT / "elemta_smtp").iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py")
                or (p.is_dir() and (p / "__init__.py").exists())}
    assert forbidden | PLUGIN_MAY_IMPORT == children
    assert not forbidden & PLUGIN_MAY_IMPORT
