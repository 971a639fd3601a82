"""Reaching a server warehouse: what is missing is named, and no secret leaves the settings."""

from __future__ import annotations

import pytest

from crm.settings import AzureSql, Settings, SettingsError
from crm.warehouse import WarehouseError, engine_name, warehouse


def test_the_connection_string_names_the_missing_setting_and_never_shows_a_secret():
    with pytest.raises(SettingsError, match="CRM_AZURE_SQL_SERVER"):
        AzureSql(None, "crm", "sql", "u", "p", None, None).odbc_connection_string()
    with pytest.raises(SettingsError, match="CRM_AZURE_CLIENT_ID"):
        AzureSql("x.database.windows.net", "crm", "ServicePrincipal", None, None, None, None).odbc_connection_string()
    sp = AzureSql("x.database.windows.net", "crm", "ServicePrincipal", None, None, "app-id", "s3cret")
    assert "Authentication=ActiveDirectoryServicePrincipal;UID=app-id;" in sp.odbc_connection_string()
    assert "s3cret" not in repr(sp)


def test_without_an_odbc_driver_the_azure_warehouse_says_what_to_install(monkeypatch, tmp_path):
    """This machine has no Microsoft ODBC driver (the image does): the stages stop on one line."""
    for name, value in {"CRM_DBT_TARGET": "azure", "CRM_AZURE_SQL_SERVER": "x.database.windows.net",
                        "CRM_AZURE_SQL_USER": "crm", "CRM_AZURE_SQL_PASSWORD": "s3cret"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with pytest.raises(WarehouseError, match="ODBC Driver 18 for SQL Server") as stopped:
        warehouse(Settings(home=tmp_path))
    assert "s3cret" not in str(stopped.value)


def test_an_unknown_target_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_DBT_TARGET", "oracle")
    with pytest.raises(SettingsError, match="CRM_DBT_TARGET='oracle': Input should be 'local', 'postgres' or 'azure'"):
        engine_name(Settings(home=tmp_path))


def test_a_postgresql_warehouse_lends_its_connections_without_its_password(monkeypatch, tmp_path):
    """What Great Expectations' SQL source is given: the dialect's URL, no secret in it."""
    for name, value in {"CRM_DBT_TARGET": "postgres", "CRM_POSTGRES_HOST": "db.bank.internal",
                        "CRM_POSTGRES_PASSWORD": "s3cret"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path)
    url, kwargs = warehouse(settings).engine_arguments()
    assert url.startswith("postgresql+psycopg2://") and "s3cret" not in url and callable(kwargs["creator"])
    assert "s3cret" not in repr(settings.postgres)
    # dbt, in a task's own process, gets it (the Connection's or the variable's)
    assert settings.postgres.dbt_env()["CRM_POSTGRES_PASSWORD"] == "s3cret"


def test_production_never_starts_an_embedded_postgresql(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_ENVIRONMENT", "production")
    monkeypatch.setenv("CRM_DBT_TARGET", "postgres")
    monkeypatch.delenv("CRM_POSTGRES_HOST", raising=False)
    with pytest.raises(SettingsError, match="the Airflow Connection crm_warehouse or CRM_POSTGRES_HOST"):
        Settings(home=tmp_path).postgres  # noqa: B018 - the property is what is checked


def test_azure_sql_comes_from_the_airflow_connection_as_the_other_systems_do(monkeypatch, tmp_path):
    """The Connection crm_warehouse (host: server, schema: database; a service principal's id and
    secret as login and password) reaches the stages and dbt's profile, its secret in neither repr."""
    import json

    for name in ("CRM_AZURE_SQL_SERVER", "CRM_AZURE_SQL_USER", "CRM_AZURE_SQL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_DBT_TARGET", "azure")
    monkeypatch.setenv("AIRFLOW_CONN_CRM_WAREHOUSE", json.dumps({
        "conn_type": "mssql", "host": "crm-prod.database.windows.net", "schema": "crmdw", "login": "app-id",
        "password": "s3cret", "extra": {"authentication": "ServicePrincipal", "tenant_id": "tenant-1"}}))  # fmt: skip
    azure = Settings(home=tmp_path).azure_sql
    assert (azure.server, azure.database, azure.client_id, azure.tenant_id) == (
        "crm-prod.database.windows.net", "crmdw", "app-id", "tenant-1")  # fmt: skip
    assert "UID=app-id;PWD=s3cret;" in azure.odbc_connection_string() and "s3cret" not in repr(azure)
    from crm.warehouse import dbt_env

    env = dbt_env(Settings(home=tmp_path))
    assert env["CRM_AZURE_SQL_SERVER"] == "crm-prod.database.windows.net" and env["CRM_AZURE_CLIENT_SECRET"] == "s3cret"
    assert env["CRM_AZURE_SQL_AUTH"] == "ServicePrincipal" and env["CRM_ANALYST_ROLE"] == "crm_analyst"


def test_production_is_azure_sql_unless_told_and_never_the_embedded_duckdb(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_ENVIRONMENT", "production")
    monkeypatch.delenv("CRM_DBT_TARGET", raising=False)
    monkeypatch.delenv("CRM_AZURE_SQL_SERVER", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CRM_WAREHOUSE", raising=False)
    settings = Settings(home=tmp_path)
    assert settings.dbt_target == "azure"
    with pytest.raises(SettingsError, match="the Airflow Connection crm_warehouse or CRM_AZURE_SQL_SERVER"):
        settings.azure_sql  # noqa: B018 - the property is what is checked
    monkeypatch.setenv("CRM_DBT_TARGET", "local")
    with pytest.raises(SettingsError, match="the embedded DuckDB warehouse is for development"):
        Settings(home=tmp_path)
