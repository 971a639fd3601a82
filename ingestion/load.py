"""Load the landed partitions of one business date into the warehouse's ``raw`` schema.

Snapshots (customers, accounts) are kept per business date; windowed entities (transactions,
campaign responses) replace the rows of the days their landed range covers, and record those days
in ``raw._coverage``, from which the next extraction plans its delta (``plan_extraction``).
Everything for the date goes in one transaction, so a reader never sees half a load and a rerun
gives the same rows.

Two warehouses: DuckDB (target ``local``) and Azure SQL (target ``azure``: SQL Server through
pyodbc, ``fast_executemany`` bulk inserts in batches). This project's machines have no SQL
Server and no ODBC driver: the SQL Server path is tested up to the connection (the T-SQL it
sends, the batches it binds, the error it gives without a driver), not against a server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ingestion.extract import landed_since, landed_window, partition_files, plan_window, window
from models.core_banking import ENTITIES, PRIMARY_KEYS

log = logging.getLogger(__name__)

WINDOW_COLUMN = {"transactions": "booking_date", "campaign_responses": "contact_date"}


def _landed(
    business_date: dt.date, settings: Settings, entities: Sequence[str] = tuple(ENTITIES)
) -> dict[str, list[Path]]:
    """Each entity's landed files for the date (one, or one per slice of a history load)."""
    paths = {e: partition_files(settings.landing_dir, e, business_date) for e in entities}
    missing = [e for e, p in paths.items() if not p]
    if missing:
        raise FileNotFoundError(f"nothing landed for {business_date} for: {', '.join(missing)}; run the extraction")
    return paths


def _parquet_list(paths: list[Path]) -> str:
    return "[{}]".format(", ".join("'{}'".format(str(p).replace("'", "''")) for p in paths))


COVERAGE = "raw._coverage"  # (entity, day, _business_date): the days of a windowed entity raw holds


def _days(span: tuple[dt.date, dt.date]) -> list[dt.date]:
    return [span[0] + dt.timedelta(days=i) for i in range((span[1] - span[0]).days + 1)]


@contextlib.contextmanager
def _plan_reader(settings: Settings) -> Iterator:
    """One connection to the warehouse for a plan's reads: ``rows(duckdb_sql, tsql, params)``."""
    if settings.dbt_target == "azure":
        conn = _pyodbc().connect(settings.azure_sql.odbc_connection_string(), autocommit=True)

        def tsql_rows(_, tsql: str, params: list) -> list:
            cursor = conn.cursor().execute(tsql, *params)
            return cursor.fetchall() if cursor.description else []  # no table yet: no rows

        try:
            yield tsql_rows
        finally:
            conn.close()
    else:
        with connect(settings) as con:
            create_raw_tables(con)
            yield lambda sql, _, params: con.execute(sql, params).fetchall()


def covered_days(rows, entity: str, first: dt.date, last: dt.date) -> set[dt.date]:
    """The days between ``first`` and ``last`` whose ``entity`` records ``raw`` holds."""
    found = rows(
        f"select day from {COVERAGE} where entity = ? and day between ? and ?",
        COVERAGE_TSQL["select"],
        [entity, first, last],
    )
    return {r[0] if isinstance(r[0], dt.date) else dt.date.fromisoformat(str(r[0])) for r in found}


FULL_SNAPSHOT_WEEKDAY = 6  # Sunday: customers and accounts are extracted whole once a week


def _snapshot_plan(rows, entity: str, business_date: dt.date) -> dict | None:
    """A snapshot entity's extraction: the records changed on the day, the rest carried from the
    previous day's snapshot in ``raw``; whole on Sundays and whenever that snapshot is missing."""
    if business_date.weekday() == FULL_SNAPSHOT_WEEKDAY:
        return None
    held = _holds_snapshot(rows, entity, business_date - dt.timedelta(days=1))
    return {"since": business_date.isoformat()} if held else None


def _holds_snapshot(rows, entity: str, day: dt.date) -> bool:
    """Whether ``raw`` holds ``entity``'s snapshot of ``day``."""
    sql = f"select 1 from raw.{entity} where _business_date = ? limit 1"
    return bool(rows(sql, SNAPSHOT_TSQL["exists"].format(table=f"raw.{entity}"), [day]))


def plan_extraction(business_date: dt.date, settings: Settings | None = None) -> dict[str, list[str] | dict | None]:
    """What the day's extraction fetches of each entity: the delta of a windowed entity (its day and
    the late-arrival days), or its history from the first day ``raw`` is missing; a snapshot's
    changes since the day before (``{"since": D}``) or, None, the whole snapshot. Read from the
    warehouse once per run, before the extraction (``crm_daily``'s ``plan_extraction`` task)."""
    settings = settings or get_settings()
    plan: dict[str, list[str] | dict | None] = {}
    with _plan_reader(settings) as rows:
        for entity in ENTITIES:
            full = window(entity, business_date, settings)
            if full is None:
                plan[entity] = _snapshot_plan(rows, entity, business_date)
                continue
            covered = covered_days(rows, entity, full[0], business_date)
            span = plan_window(entity, business_date, covered, settings)
            plan[entity] = [span[0].isoformat(), span[1].isoformat()]
    log.info("extraction plan for %s: %s", business_date, plan)
    return plan


def extraction_jobs(business_date: dt.date, settings: Settings | None = None) -> list[dict]:
    """The day's extraction jobs (``crm_daily``'s ``plan_extraction`` task: one mapped ``extract``
    and ``gate_landing`` each), from its plan; what an earlier plan of the date left in the landing
    area and this one does not make is removed first."""
    from crm.integration_api import client_for
    from ingestion.extract import prepare_partitions, slices

    settings = settings or get_settings()
    plan = plan_extraction(business_date, settings)
    with client_for(settings) as client:  # the API's counts size the slices
        jobs = slices(plan, settings, client.control_total)
    for path in prepare_partitions(jobs, business_date, settings):
        log.info("removed %s: an earlier plan's, not this one's", path)
    return jobs


def _carry_sql(entity: str, columns: list[str], tsql: bool = False) -> str:
    """Copy the previous day's records of a snapshot that the day's delta (already inserted) did not
    replace, as the day's: parameters (business date, previous date, business date)."""
    key = PRIMARY_KEYS[entity]
    quote = (lambda c: f"[{c}]") if tsql else (lambda c: f'"{c}"')
    cols = ", ".join(quote(c) for c in columns)
    return (
        f"INSERT INTO raw.{entity} ({cols}, {quote('_business_date')}) SELECT {cols}, ? FROM raw.{entity} p "
        f"WHERE p.{quote('_business_date')} = ? AND NOT EXISTS (SELECT 1 FROM raw.{entity} d "
        f"WHERE d.{quote('_business_date')} = ? AND d.{quote(key)} = p.{quote(key)})"
    )


def _missing_base(entity: str, business_date: dt.date) -> RuntimeError:
    previous = business_date - dt.timedelta(days=1)
    return RuntimeError(
        f"{entity} for {business_date} landed as the changes of the day, but raw holds no {entity} for "
        f"{previous} to carry the rest from (removed since the plan?): rerun the day, whose plan will "
        "then extract the whole snapshot"
    )


def create_raw_tables(con) -> None:
    """The ``raw.<entity>`` tables, one per contract plus ``_business_date``, and the coverage of the
    windowed ones, when missing (DuckDB)."""
    from ingestion.contract import arrow_schema

    con.execute("create schema if not exists raw")
    con.execute(f"create table if not exists {COVERAGE} (entity varchar, day date, _business_date date)")
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
            for entity, files in paths.items():
                source = (
                    f"(select *, date '{d}' as _business_date "
                    f"from read_parquet({_parquet_list(files)}, hive_partitioning = false))"
                )
                span = landed_window(entity, business_date, settings)
                delta = span is None and landed_since(entity, business_date, settings) is not None
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
                    con.execute(f"delete from {COVERAGE} where entity = ? and day between ? and ?", [entity, *span])
                    con.executemany(
                        f"insert into {COVERAGE} values (?, ?, ?)", [(entity, d, business_date) for d in _days(span)]
                    )
                con.execute(f"insert into raw.{entity} by name select * from {source}")
                if delta:  # the rest of the snapshot: the previous day's, unchanged
                    previous = business_date - dt.timedelta(days=1)
                    if not _holds_snapshot(
                        lambda sql, _, params: con.execute(sql, params).fetchall(), entity, previous
                    ):
                        raise _missing_base(entity, business_date)
                    columns = pq.read_schema(files[0]).names
                    con.execute(_carry_sql(entity, columns), [business_date, previous, business_date])
                counts[entity] = sum(pq.read_metadata(f).num_rows for f in files)
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    log.info("loaded raw tables for %s: %s", d, counts)
    return counts


# ---- Azure SQL (SQL Server) ------------------------------------------------------------------

BATCH_ROWS = 10_000
SNAPSHOT_TSQL = {
    "exists": "IF OBJECT_ID(N'{table}', N'U') IS NOT NULL SELECT TOP 1 1 FROM {table} WHERE [_business_date] = ?;",
}
COVERAGE_TSQL = {
    "create": f"IF OBJECT_ID(N'{COVERAGE}', N'U') IS NULL CREATE TABLE {COVERAGE} "
    "([entity] NVARCHAR(40) NOT NULL, [day] DATE NOT NULL, [_business_date] DATE NOT NULL);",
    "delete": f"DELETE FROM {COVERAGE} WHERE [entity] = ? AND [day] BETWEEN ? AND ?;",
    "insert": f"INSERT INTO {COVERAGE} ([entity], [day], [_business_date]) VALUES (?, ?, ?);",
    "select": f"IF OBJECT_ID(N'{COVERAGE}', N'U') IS NOT NULL SELECT [day] FROM {COVERAGE} "
    "WHERE [entity] = ? AND [day] BETWEEN ? AND ?;",
}


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
    span = landed_window(entity, business_date, settings)
    if span is None:
        delete = (f"DELETE FROM {table} WHERE [_business_date] = ?", [business_date])
        coverage = []
    else:
        delete = (f"DELETE FROM {table} WHERE [{WINDOW_COLUMN[entity]}] BETWEEN ? AND ?", list(span))
        coverage = [
            (COVERAGE_TSQL["create"], []),
            (COVERAGE_TSQL["delete"], [entity, *span]),
            *((COVERAGE_TSQL["insert"], [entity, d, business_date]) for d in _days(span)),
        ]
    carry = None
    if span is None and landed_since(entity, business_date, settings) is not None:
        carry = (
            _carry_sql(entity, list(schema.names), tsql=True),
            [business_date, business_date - dt.timedelta(days=1), business_date],
        )
    return {
        "carry": carry,
        "coverage": coverage,
        "schema": "IF SCHEMA_ID(N'raw') IS NULL EXEC(N'CREATE SCHEMA raw');",
        "create": f"IF OBJECT_ID(N'{table}', N'U') IS NULL CREATE TABLE {table} ({definitions});",
        "delete": delete,
        "insert": f"INSERT INTO {table} ({', '.join(f'[{c}]' for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)});",
    }


def sqlserver_batches(
    paths: Path | list[Path], business_date: dt.date, rows: int = BATCH_ROWS
) -> Iterator[list[tuple]]:
    """The landed partition (its file, or its slices' files) as parameter rows for the insert, a
    batch at a time (bounded memory)."""
    for path in [paths] if isinstance(paths, Path) else paths:
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
        for entity, files in paths.items():
            sql = sqlserver_statements(entity, pq.read_schema(files[0]), business_date, settings)
            cursor.execute(sql["schema"])
            cursor.execute(sql["create"])
            cursor.execute(sql["delete"][0], *sql["delete"][1])
            for statement, values in sql["coverage"]:
                cursor.execute(statement, *values)
            counts[entity] = 0
            for batch in sqlserver_batches(files, business_date):
                cursor.executemany(sql["insert"], batch)
                counts[entity] += len(batch)
            if sql["carry"] is not None:  # a snapshot's changes of the day: the rest from the day before
                cursor.execute(sql["carry"][0], *sql["carry"][1])
                if cursor.rowcount == 0 and counts[entity] == 0:
                    raise _missing_base(entity, business_date)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    log.info("loaded raw tables in Azure SQL for %s: %s", business_date, counts)
    return counts
