"""The Azure SQL (SQL Server) load, as far as it goes without a SQL Server: the T-SQL it sends and
the rows it binds, from a real landing; and the clear error it gives on a machine without the
ODBC driver (this one)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from tsql import duckdb_only_constructs

from crm.settings import AzureSql, SettingsError
from ingestion.extract import extract_entity, partition_path
from ingestion.load import SqlServerUnavailable, load_business_date, sqlserver_batches, sqlserver_statements
from models.core_banking import ENTITIES

D = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def landed(settings):
    s = dataclasses.replace(
        settings,
        home=settings.home / "azure-load",
        sandbox_customers=200,
        sandbox_seed=3,
        transaction_lookback_days=5,
        response_lookback_days=120,
    )
    s.ensure_dirs()
    for entity in ENTITIES:
        extract_entity(entity, D, s)
    yield s
    from crm.services import stop_sandbox

    stop_sandbox(s)


def test_the_tsql_creates_replaces_and_inserts_every_contract_field(landed):
    for entity, model in ENTITIES.items():
        path = partition_path(landed.landing_dir, entity, D)
        sql = sqlserver_statements(entity, pq.read_schema(path), D, landed)
        for statement in (sql["schema"], sql["create"], sql["delete"][0], sql["insert"]):
            assert duckdb_only_constructs(statement) == [], (entity, statement)
        for field in model.model_fields:
            assert f"[{field}] " in sql["create"] and f"[{field}]" in sql["insert"], (entity, field)
        assert sql["create"].startswith(f"IF OBJECT_ID(N'raw.{entity}', N'U') IS NULL CREATE TABLE raw.{entity} (")
        assert sql["insert"].count("?") == len(model.model_fields) + 1  # and _business_date
    accounts = sqlserver_statements(
        "accounts", pq.read_schema(partition_path(landed.landing_dir, "accounts", D)), D, landed
    )
    assert "[balance] DECIMAL(16, 2) NOT NULL" in accounts["create"]
    assert accounts["delete"] == ("DELETE FROM raw.accounts WHERE [_business_date] = ?", [D])
    tx_path = partition_path(landed.landing_dir, "transactions", D)
    transactions = sqlserver_statements("transactions", pq.read_schema(tx_path), D, landed)
    assert transactions["delete"] == (
        "DELETE FROM raw.transactions WHERE [booking_date] BETWEEN ? AND ?",
        [D - dt.timedelta(days=4), D],
    )
    # the days it holds go in raw._coverage, from which the next day's extraction is planned
    coverage = transactions["coverage"]
    assert coverage[1] == ("DELETE FROM raw._coverage WHERE [entity] = ? AND [day] BETWEEN ? AND ?;",
                           ["transactions", D - dt.timedelta(days=4), D])  # fmt: skip
    assert [values[1] for _, values in coverage[2:]] == [D - dt.timedelta(days=4 - i) for i in range(5)]
    for statement, _ in coverage:
        assert duckdb_only_constructs(statement) == [], statement
    assert accounts["carry"] is None  # a whole snapshot: nothing carried from the day before


def test_a_day_of_snapshot_changes_carries_the_rest_of_the_day_before_in_tsql(landed):
    changes = dataclasses.replace(landed, home=landed.home / "changes")
    changes.ensure_dirs()
    extract_entity("customers", D, changes, since=D)
    sql = sqlserver_statements(
        "customers", pq.read_schema(partition_path(changes.landing_dir, "customers", D)), D, changes
    )
    statement, values = sql["carry"]
    assert values == [D, D - dt.timedelta(days=1), D]
    assert statement.startswith("INSERT INTO raw.customers ([customer_id], ")
    assert "WHERE p.[_business_date] = ? AND NOT EXISTS (SELECT 1 FROM raw.customers d" in statement
    assert "d.[customer_id] = p.[customer_id]" in statement and duckdb_only_constructs(statement) == []


def test_the_batches_bind_every_landed_row_with_its_business_date(landed):
    path = partition_path(landed.landing_dir, "accounts", D)
    table = pq.read_table(path)
    rows = [row for batch in sqlserver_batches(path, D, rows=97) for row in batch]
    assert len(rows) == table.num_rows
    assert rows[0] == (*table.slice(0, 1).to_pylist()[0].values(), D)
    assert isinstance(rows[0][table.schema.get_field_index("balance")], Decimal)
    assert isinstance(rows[0][table.schema.get_field_index("opened_on")], dt.date)


def test_without_an_odbc_driver_the_azure_load_says_what_is_missing(landed):
    azure = dataclasses.replace(landed, dbt_target="azure")
    with pytest.raises(SqlServerUnavailable, match="ODBC Driver 18 for SQL Server"):
        load_business_date(D, azure)


def test_the_connection_string_names_the_missing_setting_and_never_shows_a_secret():
    with pytest.raises(SettingsError, match="CRM_AZURE_SQL_SERVER"):
        AzureSql(None, "crm", "sql", "u", "p", None, None).odbc_connection_string()
    with pytest.raises(SettingsError, match="CRM_AZURE_CLIENT_ID"):
        AzureSql("x.database.windows.net", "crm", "ServicePrincipal", None, None, None, None).odbc_connection_string()
    sp = AzureSql("x.database.windows.net", "crm", "ServicePrincipal", None, None, "app-id", "s3cret")
    assert "Authentication=ActiveDirectoryServicePrincipal;UID=app-id;" in sp.odbc_connection_string()
    assert "s3cret" not in repr(sp)
