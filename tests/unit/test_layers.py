"""The layers (docs/architecture.md) are import-linter contracts in setup.cfg, checked by `make lint`:
they hold on the tree as it is, and they catch an upward import, one inside a function included,
and a stage importing a database driver instead of going through crm.warehouse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crm.settings import REPO_ROOT

PACKAGES = ("models", "crm", "sandbox", "ingestion", "expectations", "ml", "serving", "entrypoints", "benchmarks")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages and setup.cfg, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def test_the_contracts_hold_on_the_project(tree):
    done = _lint(tree)
    assert done.returncode == 0, done.stdout
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "upward", "contract"),
    [
        ("crm/warehouse/session.py", "from serving.publish import publish_snapshot", "Each layer imports only"),
        ("models/read_api.py", "from crm.settings import get_settings", "Each layer imports only"),
        ("serving/codec.py", "from ml.score import write_assignments", "Each layer imports only"),
        ("ml/score.py", "from benchmarks.report import report", "Nothing the platform runs imports the benchmarks"),
        # one way into the warehouse: a stage that opens a driver itself works on one engine only
        ("serving/publish.py", "import psycopg2", "One way into the warehouse"),
        ("ml/score.py", "import duckdb", "One way into the warehouse"),
        ("ingestion/retention.py", "import pyodbc", "One way into the warehouse"),
        ("ingestion/extract.py", "import duckdb", "One way into the warehouse"),  # its dedup: crm.warehouse's
    ],
)
def test_an_upward_import_inside_a_function_breaks_the_build(tree, module, upward, contract):
    path = tree / module
    path.write_text(path.read_text() + f"\n\ndef _sneaky():\n    {upward}\n\n    return None\n")
    done = _lint(tree)
    assert done.returncode != 0
    importer = module.removesuffix(".py").replace("/", ".")
    imported = upward.split()[1]
    assert f"{contract}" in done.stdout and "BROKEN" in done.stdout
    assert f"{importer} -> {imported}" in done.stdout, done.stdout


def test_no_two_modules_share_a_file_name():
    """A module's file name says what it holds: two ``load.py`` (the raw load, the snapshot's
    publish) or three ``bank.py`` sent readers to the wrong one."""
    seen: dict[str, list[str]] = {}
    for package in (*PACKAGES, "dags"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                seen.setdefault(path.name, []).append(str(path.relative_to(REPO_ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_the_stages_run_each_other_in_two_places_at_most():
    """Where a flow needs several stages, entrypoints/ (or a DAG) sequences them; the layers
    contract lets at most two imports between stages through, each with its reason in
    docs/architecture.md."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    ignored = [ln.strip() for ln in config["importlinter:contract:layers"]["ignore_imports"].splitlines() if ln.strip()]
    assert len(ignored) <= 2, ignored
    documented = (REPO_ROOT / "docs" / "architecture.md").read_text()
    for line in ignored:
        importer, imported = (part.strip() for part in line.split("->"))
        assert f"`{importer} -> {imported}`" in documented, f"{line} has no reason in docs/architecture.md"
