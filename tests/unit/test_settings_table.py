"""The README's configuration table is generated from the settings' own declarations, so it lists
every CRM_* variable the platform reads, with the default the code uses, and nothing else."""

from __future__ import annotations

import difflib
import os
import re

import pytest
from click.testing import CliRunner

from crm.settings import REPO_ROOT, VARIABLES, Settings, SettingsError, config_table, config_table_section
from crm.settings.table import GROUPS, SECRETS
from entrypoints.cli import cli


def test_the_readme_shows_the_generated_configuration_table():
    shown = config_table_section((REPO_ROOT / "README.md").read_text())
    generated = config_table()
    diff = "".join(difflib.unified_diff(shown.splitlines(True), generated.splitlines(True), "README.md", "generated"))
    assert shown == generated, f"the README's configuration table is stale: run `crm config-table --write`\n{diff}"


def test_every_variable_is_one_settings_field_or_read_by_dbt():
    """Each field of each group is read from one CRM_* variable, no two fields from the same; a
    declared variable that is no field is one dbt reads (its profile, its macros)."""
    aliases = [f.validation_alias for group in GROUPS.values() for f in group.model_fields.values()]
    assert all(re.fullmatch(r"CRM_[A-Z0-9_]+", a) for a in aliases), aliases
    assert len(aliases) == len(set(aliases)), "a variable sets two fields"
    dbt_text = "\n".join(
        path.read_text() for pattern in ("*.yml", "macros/*.sql") for path in (REPO_ROOT / "dbt_project").glob(pattern)
    )
    read_by_dbt = set(re.findall(r"env_var\(\s*'(CRM_[A-Z_]+)'", dbt_text))
    assert set(VARIABLES) - set(aliases) <= read_by_dbt, "declared, but neither the settings nor dbt read them"
    assert read_by_dbt <= set(VARIABLES), f"dbt reads undeclared variables: {sorted(read_by_dbt - set(VARIABLES))}"


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CRM_", "AIRFLOW_CONN_")) or name == "AIRFLOW_HOME":
            monkeypatch.delenv(name)


def test_every_variable_sets_what_it_declares(monkeypatch, tmp_path):
    """Setting a variable changes its field, and only its field: the table and the code agree."""
    _clean(monkeypatch)
    defaults = Settings(home=tmp_path)
    for name, group in GROUPS.items():
        for field_name, field in group.model_fields.items():
            current = getattr(getattr(defaults, name), field_name)
            value = str(tmp_path) if field_name == "secrets_dir" else _another_value(field_name, current)
            monkeypatch.setenv(field.validation_alias, value)
            changed = Settings(home=tmp_path)
            monkeypatch.delenv(field.validation_alias)
            differs = {
                (g, f) for g in GROUPS for f in GROUPS[g].model_fields
                if getattr(getattr(changed, g), f) != getattr(getattr(defaults, g), f)
            }  # fmt: skip
            assert differs == {(name, field_name)}, (field.validation_alias, value, differs)


def _another_value(field_name: str, current: object) -> str:
    """A valid value of the variable other than ``current``."""
    special = {"environment": "production", "target": "postgres", "azure_sql_auth": "ServicePrincipal",
               "training_weekday": "Monday", "snapshot_deadline_lima": "06:30", "alert_emails": "ops@bank.pe, dq@bank.pe",
               "max_quarantine_share": "0.2", "max_audience_shrink": "0.5", "hand_off_executions": "true", "redis_url": "rediss://cache:6380/1"}  # fmt: skip
    if field_name in special:
        return special[field_name]
    if current is None and field_name.endswith("port"):
        return "4321"
    if isinstance(current, bool):
        return str(not current).lower()
    if isinstance(current, int | float):
        return str(current + 1000 if isinstance(current, int) else current + 0.25)
    return "/elsewhere/value" if current != "/elsewhere/value" else "other"


def test_a_malformed_value_is_named_with_its_variable_and_value_and_a_secret_is_never_shown(monkeypatch, tmp_path):
    _clean(monkeypatch)
    for name, value, fault in [
        ("CRM_PAGE_SIZE", "2k", "CRM_PAGE_SIZE='2k': Input should be a valid integer"),
        ("CRM_PAGE_SIZE", "0", "CRM_PAGE_SIZE='0': Input should be greater than or equal to 1"),
        ("CRM_TRAINING_WEEKDAY", "Funday", "CRM_TRAINING_WEEKDAY='Funday': must be a day of the week"),
        ("CRM_ALERT_EMAILS", "ops@bank.pe,nobody", "CRM_ALERT_EMAILS='ops@bank.pe,nobody': 'nobody' is not an e-mail"),
        ("CRM_DBT_TARGET", "oracle", "CRM_DBT_TARGET='oracle': Input should be 'local', 'postgres' or 'azure'"),
        ("CRM_SNAPSHOT_DEADLINE_LIMA", "7am", "CRM_SNAPSHOT_DEADLINE_LIMA='7am': Input should be in a valid time"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as stopped:
            Settings(home=tmp_path)
        assert str(stopped.value).startswith(fault), str(stopped.value)
        monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_REDIS_URL", "https://:s3cret@cache.bank.pe:6380")  # a secret is named, never shown
    with pytest.raises(SettingsError) as stopped:
        Settings(home=tmp_path)
    assert str(stopped.value) == "CRM_REDIS_URL=(a secret, not shown): must be a redis://, rediss:// or unix:// URL"
    monkeypatch.delenv("CRM_REDIS_URL")
    monkeypatch.setenv("CRM_POSTGRES_PASSWORD", "s3cret")
    monkeypatch.setenv("CRM_POSTGRES_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="CRM_POSTGRES_PORT='not-a-port'") as stopped:
        Settings(home=tmp_path)
    monkeypatch.delenv("CRM_POSTGRES_PORT")
    settings = Settings(home=tmp_path)
    assert "s3cret" not in str(stopped.value) and "s3cret" not in repr(settings)
    assert {"CRM_POSTGRES_PASSWORD", "CRM_AZURE_SQL_PASSWORD", "CRM_REDIS_URL", "CRM_CORE_CLIENT_SECRET"} <= SECRETS


def test_secrets_come_from_mounted_files_and_the_environment_wins(monkeypatch, tmp_path):
    """A Kubernetes Secret mounted as files named as the variables (CRM_SECRETS_DIR): read when the
    environment does not set the variable; an absent directory named is an error, not ignored."""
    _clean(monkeypatch)
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    (mounted / "CRM_REDIS_URL").write_text("rediss://:from-file@cache.bank.pe:6380/0")
    (mounted / "CRM_POSTGRES_PASSWORD").write_text("from-file")
    monkeypatch.setenv("CRM_SECRETS_DIR", str(mounted))
    settings = Settings(home=tmp_path)
    assert settings.redis_url == "rediss://:from-file@cache.bank.pe:6380/0"
    assert settings.warehouse.postgres_password.get_secret_value() == "from-file"
    monkeypatch.setenv("CRM_REDIS_URL", "redis://from-env:6379/0")
    assert Settings(home=tmp_path).redis_url == "redis://from-env:6379/0"
    # an empty key of the Secret is no secret: production still refuses what it lacks
    (mounted / "CRM_MLFLOW_TRACKING_URI").write_text("\n")
    (mounted / "CRM_PAGE_SIZE").write_text("")
    monkeypatch.setenv("CRM_ENVIRONMENT", "production")
    monkeypatch.setenv("CRM_DBT_TARGET", "postgres")
    production = Settings(home=tmp_path)
    assert production.extraction.page_size == 2000
    with pytest.raises(SettingsError, match="no model registry is configured"):
        _ = production.mlflow_tracking_uri
    monkeypatch.setenv("CRM_SECRETS_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(SettingsError, match=r"CRM_SECRETS_DIR=.*not-mounted.*not a directory"):
        Settings(home=tmp_path)


def test_replace_changes_a_group_field_by_name_and_forgets_what_was_resolved(tmp_path):
    settings = Settings(home=tmp_path)
    assert settings.audit_key_path == tmp_path / "identity" / "audit_key"
    moved = settings.replace(home=tmp_path / "b", customers=300, redis_deadline_s=0.5)
    assert (moved.sandbox.customers, moved.serving.redis_deadline_s) == (300, 0.5)
    assert moved.audit_key_path == tmp_path / "b" / "identity" / "audit_key"
    assert settings.sandbox.customers == Settings(home=tmp_path).sandbox.customers  # the original is unchanged
    with pytest.raises(TypeError, match="sandbox_customers is not a setting"):
        settings.replace(sandbox_customers=300)
    # a change is validated as the environment's value is
    assert settings.replace(alert_emails="a@bank.pe, b@bank.pe").orchestration.alert_emails == (
        "a@bank.pe",
        "b@bank.pe",
    )
    configured = settings.replace(jwt_issuer="https://login.bank.pe")
    assert "jwt_issuer" in configured.identity.model_fields_set  # production tells it from the default
    assert "jwt_issuer" not in configured.replace(jwt_issuer="").identity.model_fields_set  # empty: unset again
    with pytest.raises(SettingsError, match="CRM_PAGE_SIZE=0: Input should be greater than or equal to 1"):
        settings.replace(page_size=0)
    with pytest.raises(SettingsError, match="CRM_DBT_TARGET=local: the embedded DuckDB warehouse is for development"):
        settings.replace(environment="production", target="local")


def test_only_the_crm_names_are_read(monkeypatch, tmp_path):
    """A bare field name in the environment (``seed``, ``environment``) is someone else's variable."""
    _clean(monkeypatch)
    monkeypatch.setenv("environment", "production")
    monkeypatch.setenv("seed", "7")
    settings = Settings(home=tmp_path)
    assert (settings.environment, settings.sandbox.seed) == ("local", 42)


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
