"""The README's configuration table is generated from the settings' own declarations, so it lists
every CRM_* variable the platform reads, with the default the code uses, and nothing else."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from functools import cached_property

import pytest
from click.testing import CliRunner

import crm.settings as settings_module
from crm.settings import (
    REPO_ROOT,
    VARIABLES,
    Settings,
    SettingsError,
    UndeclaredVariable,
    config_table,
    config_table_section,
)
from entrypoints.cli import cli

READ_ENV = settings_module._env  # the settings helpers' reader, before a test wraps it


def test_the_readme_shows_the_generated_configuration_table():
    shown = config_table_section((REPO_ROOT / "README.md").read_text())
    generated = config_table()
    diff = "".join(difflib.unified_diff(shown.splitlines(True), generated.splitlines(True), "README.md", "generated"))
    assert shown == generated, f"the README's configuration table is stale: run `crm config-table --write`\n{diff}"


def _read_by_the_settings(monkeypatch: pytest.MonkeyPatch, environment: str) -> set[str]:
    """Every CRM_* name that constructing Settings and reading each of its properties asks the
    settings helpers for, in a clean environment (nothing CRM_* or Airflow set) but CRM_ENVIRONMENT."""
    for name in list(os.environ):
        if name.startswith(("CRM_", "AIRFLOW_CONN_")) or name == "AIRFLOW_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_ENVIRONMENT", environment)
    read: set[str] = set()

    def recording_env(name: str, default: str | None = None) -> str | None:
        read.add(name)
        return READ_ENV(name, default)  # refuses (UndeclaredVariable) a name not declared

    monkeypatch.setattr(settings_module, "_env", recording_env)
    settings = Settings()
    for name, member in vars(Settings).items():
        if isinstance(member, property | cached_property):
            # production refuses what is not configured: it was read, that is enough
            with contextlib.suppress(SettingsError):
                getattr(settings, name)
    return read


def test_every_variable_the_settings_read_is_declared_and_every_declared_one_is_read(monkeypatch):
    read = _read_by_the_settings(monkeypatch, "local") | _read_by_the_settings(monkeypatch, "production")
    assert read <= set(VARIABLES), f"read but not declared: {sorted(read - set(VARIABLES))}"
    # a declared variable the settings module does not read is read by dbt (profile, macros)
    dbt_text = "\n".join(
        path.read_text() for pattern in ("*.yml", "macros/*.sql") for path in (REPO_ROOT / "dbt_project").glob(pattern)
    )
    read_by_dbt = set(re.findall(r"env_var\(\s*'(CRM_[A-Z_]+)'", dbt_text))
    assert set(VARIABLES) - read - read_by_dbt == set(), "declared, but neither the settings nor dbt read them"


def test_a_variable_not_declared_or_read_with_another_default_is_refused(monkeypatch):
    monkeypatch.delenv("CRM_PAGE_SIZE", raising=False)
    with pytest.raises(UndeclaredVariable, match="CRM_NOT_A_SETTING is not declared"):
        settings_module._env("CRM_NOT_A_SETTING")
    with pytest.raises(UndeclaredVariable, match="declared as 2000"):
        settings_module._int("CRM_PAGE_SIZE", 1000)


def test_config_table_write_puts_the_generated_table_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n<!-- config-table:start -->\n| stale |\n<!-- config-table:end -->\n\nafter\n")
    done = CliRunner().invoke(cli, ["config-table", "--write", "--readme", str(readme)])
    assert done.exit_code == 0, done.output
    assert (
        readme.read_text()
        == f"# title\n\n<!-- config-table:start -->\n{config_table()}<!-- config-table:end -->\n\nafter\n"
    )
    printed = CliRunner().invoke(cli, ["config-table"])
    assert printed.output == config_table()
    again = CliRunner().invoke(cli, ["config-table", "--write", "--readme", str(readme)])
    assert "already up to date" in again.output
