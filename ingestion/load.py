"""Load the landed partitions of one business date into the warehouse's ``raw`` schema.

Snapshots (customers, accounts) are kept per business date; windowed entities (transactions,
campaign responses) replace the rows of the dates their window covers. Everything for the date
goes in one transaction, so a reader never sees half a load and a rerun gives the same rows.

Two warehouses: DuckDB (target ``local``) and Azure SQL (target ``azure``: SQL Server through
pyodbc, ``fast_executemany`` bulk inserts in batches). This project's machines have no SQL
Server and no ODBC driver: the SQL Server path is tested up to the connection (the T-SQL it
sends, the batches it binds, the error it gives without a driver), not against a server.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ingestion.extract import partition_path, window
from models.core_banking import ENTITIES

log = logging.getLogger(__name__)

WINDOW_COLUMN = {"transactions": "booking_date", "campaign_responses": "contact_date"}


def _landed(business_date: dt.date, settings: Settings, entities: Sequence[str] = tuple(ENTITIES)) -> dict[str, Path]:
    paths = {e: partition_path(settings.landing_dir, e, business_date) for e in entities}
    missing = [e for e, p in paths.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"nothing landed for {business_date} for: {', '.join(missing)}; run the extraction")
    return paths


def create_raw_tables(con) -> None:
    """The ``raw.<entity>`` tables, one per contract plus ``_business_date``, when missing (DuckDB)."""
    from ingestion.extract import arrow_schema

    con.execute("create schema if not exists raw")
    for entity, model in ENTITIES.items():
        empty = arrow_schema(model).empty_table()  # noqa: F841 - read by the statement below
        con.execute(
            f"create table if not exists raw.{entity} as select *, cast(null as date) as _business_date from empty"
        )


def load_business_date(
    business_date: dt.date, settings: Settings | None = None, entities: Sequence[str] = tuple(ENTITIES)
) -> dict[str, int]:
    """Load the ``entities`` (all by default) landed for ``business_date`` into the target's
    warehouse; rows per table. The feature backfill of model training loads only the snapshots."""
    settings = settings or get_settings()
    if settings.dbt_target == "azure":
        return load_sqlserver(business_date, settings, entities)
    paths = _landed(business_date, settings, entities)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    d = business_date.isoformat()
    with connect(settings) as con:
        create_raw_tables(con)
        con.execute("begin transaction")
        try:
            for entity, path in paths.items():
                source = (
                    f"(select *, date '{d}' as _business_date from read_parquet('{path}', hive_partitioning = false))"
                )
                span = window(entity, business_date, settings)
                if span is None:
                    con.execute(
                        f"delete from raw.{entity} where _business_date = ?",
                        [business_date],
                    )
                else:
                    col = WINDOW_COLUMN[entity]
                    con.execute(
                        f"delete from raw.{entity} where {col} between ? and ?",
                        list(span),
                    )
                con.execute(f"insert into raw.{entity} by name select * from {source}")
                counts[entity] = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    log.info("loaded raw tables for %s: %s", d, counts)
    return counts


# ---- Azure SQL (SQL Server) ------------------------------------------------------------------

BATCH_ROWS = 10_000


class SqlServerUnavailable(RuntimeError):
    """pyodbc or the Microsoft ODBC driver is missing on this machine."""


def _tsql_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    if pa.types.is_boolean(arrow_type):
        return "BIT"
    if pa.types.is_date32(arrow_type):
        return "DATE"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_string(arrow_type):
        return "NVARCHAR(400)"
    raise TypeError(f"no T-SQL type for arrow type {arrow_type}")


def sqlserver_statements(entity: str, schema: pa.Schema, business_date: dt.date, settings: Settings) -> dict:
    """The T-SQL that loads ``entity``: create the table when missing, delete the rows the load
    replaces (with their parameters), insert (one ``?`` per column, ``_business_date`` last)."""
    table = f"raw.{entity}"
    columns = [*schema.names, "_business_date"]
    definitions = ", ".join(
        [f"[{f.name}] {_tsql_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema]
        + ["[_business_date] DATE NOT NULL"]
    )
    span = window(entity, business_date, settings)
    if span is None:
        delete = (f"DELETE FROM {table} WHERE [_business_date] = ?", [business_date])
    else:
        delete = (f"DELETE FROM {table} WHERE [{WINDOW_COLUMN[entity]}] BETWEEN ? AND ?", list(span))
    return {
        "schema": "IF SCHEMA_ID(N'raw') IS NULL EXEC(N'CREATE SCHEMA raw');",
        "create": f"IF OBJECT_ID(N'{table}', N'U') IS NULL CREATE TABLE {table} ({definitions});",
        "delete": delete,
        "insert": f"INSERT INTO {table} ({', '.join(f'[{c}]' for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)});",
    }


def sqlserver_batches(path: Path, business_date: dt.date, rows: int = BATCH_ROWS) -> Iterator[list[tuple]]:
    """The landed partition as parameter rows for the insert, a batch at a time (bounded memory)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        columns = [column.to_pylist() for column in batch.columns]
        yield [(*values, business_date) for values in zip(*columns, strict=True)]


def _pyodbc():
    try:
        import pyodbc
    except ImportError as exc:
        raise SqlServerUnavailable(
            "the Azure SQL load (CRM_DBT_TARGET=azure) needs unixODBC and the Microsoft ODBC Driver 18 for "
            f"SQL Server on this machine; pyodbc could not load: {exc}"
        ) from None
    if not any("SQL Server" in d for d in pyodbc.drivers()):
        raise SqlServerUnavailable(
            f"no SQL Server ODBC driver is installed (found: {pyodbc.drivers() or 'none'}); "
            "install the Microsoft ODBC Driver 18 for SQL Server"
        )
    return pyodbc


def load_sqlserver(
    business_date: dt.date, settings: Settings, entities: Sequence[str] = tuple(ENTITIES)
) -> dict[str, int]:
    """The Azure SQL load: the entities of the date in one transaction, bulk inserts in batches."""
    paths = _landed(business_date, settings, entities)
    pyodbc = _pyodbc()
    conn = pyodbc.connect(settings.azure_sql.odbc_connection_string(), autocommit=False)
    counts: dict[str, int] = {}
    try:
        cursor = conn.cursor()
        cursor.fast_executemany = True  # array binding: one round trip per batch
        for entity, path in paths.items():
            sql = sqlserver_statements(entity, pq.read_schema(path), business_date, settings)
            cursor.execute(sql["schema"])
            cursor.execute(sql["create"])
            cursor.execute(sql["delete"][0], *sql["delete"][1])
            counts[entity] = 0
            for batch in sqlserver_batches(path, business_date):
                cursor.executemany(sql["insert"], batch)
                counts[entity] += len(batch)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    log.info("loaded raw tables in Azure SQL for %s: %s", business_date, counts)
    return counts
