"""The warehouse's connections, one engine per warehouse and process: DuckDB's (a file, opened
read-write with the settings dbt's profile gives, one connection per use), PostgreSQL's and SQL
Server's (pooled). The only module that imports a database driver (``make lint``)."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crm.settings import AzureSql, Settings, SettingsError
from crm.warehouse.session import Warehouse, WarehouseError, engine_name

_engines: dict[tuple, tuple[sa.Engine, Callable[[], Any]]] = {}
_engines_lock = threading.Lock()


def buffered_duckdb(wrapped):
    """A duckdb-engine connection (of a ``ConnectionWrapper`` or a DuckDB connection) whose cursors
    fetch a result as soon as it is made."""
    from duckdb_engine import ConnectionWrapper, CursorWrapper

    class Cursor(CursorWrapper):
        def __init__(self, raw, wrapper):
            super().__init__(raw, wrapper)
            self._raw, self._rows, self._description = raw, [], None

        def execute(self, statement, parameters=None, context=None):
            self._rows, self._description = [], None
            super().execute(statement, parameters, context)
            self._description = self._raw.description
            if self._description is not None:
                self._rows = self._raw.fetchall()

        description = property(lambda self: self._description)
        rowcount = property(lambda self: len(self._rows) if self._description is not None else -1)

        def fetchone(self):
            return self._rows.pop(0) if self._rows else None

        def fetchmany(self, size=None):
            size = size or 1
            out, self._rows = self._rows[:size], self._rows[size:]
            return out

        def fetchall(self):
            out, self._rows = self._rows, []
            return out

    class Connection(ConnectionWrapper):
        def cursor(self):
            return Cursor(raw, self)

    raw = wrapped._ConnectionWrapper__c if isinstance(wrapped, ConnectionWrapper) else wrapped
    return Connection(raw)


@contextlib.contextmanager
def parquet_view(files: list[Path], memory_mb: int, name: str = "landed") -> Iterator[tuple[str, dict[str, Any]]]:
    """(URL, ``create_engine`` keyword arguments) of an in-memory DuckDB where the view ``name``
    reads the Parquet ``files`` in place, as one relation: for another SQLAlchemy user (Great
    Expectations' SQL data source) to query them where they are. Every connection made is a cursor of
    the one database (where the view is), bounded by ``memory_mb`` and spilling past it to a
    directory of its own beside the first file; closed on exit."""
    import tempfile

    import duckdb

    paths = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    database = duckdb.connect(":memory:")
    spill = tempfile.mkdtemp(prefix=".spill-", dir=files[0].parent)
    try:
        database.execute(f"set memory_limit = '{int(memory_mb)}MB'")
        database.execute(f"set temp_directory = '{spill.replace(chr(39), chr(39) * 2)}'")
        # the files' own columns only: no business_date column from the partition's directory name
        database.execute(f'create view "{name}" as select * from read_parquet([{paths}], hive_partitioning = false)')
        yield "duckdb:///:memory:", {"creator": lambda: buffered_duckdb(database.cursor())}
    finally:
        database.close()
        shutil.rmtree(spill, ignore_errors=True)


@contextlib.contextmanager
def scratch_duckdb(memory_mb: int, spill: Path) -> Iterator[Any]:
    """A DuckDB connection of its own, in memory, for work on files that is no warehouse's (the
    extraction's dedup of its landed pages): one thread, the rows' order kept, bounded by
    ``memory_mb`` and spilling past it to ``spill``; closed on exit."""
    import duckdb

    config = {"memory_limit": f"{int(memory_mb)}MB", "threads": 1, "temp_directory": str(spill),
              "preserve_insertion_order": True}  # fmt: skip
    with duckdb.connect(config=config) as con:
        yield con


def _duckdb_connector(database: str, memory_mb: int) -> Callable[[], Any]:
    """A factory of duckdb-engine connections to ``database`` (a file, or ``:memory:``)."""
    import duckdb
    from duckdb_engine import ConnectionWrapper

    def connect() -> ConnectionWrapper:
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(database)
        # bounded: past CRM_DUCKDB_MEMORY_MB DuckDB spills to <warehouse>.duckdb.tmp. Set, not passed as
        # connect's config: DuckDB refuses a second connection to a file open in the same process (dbt
        # in an Airflow task) with a different config; dbt's profile sets the same
        con.execute(f"set memory_limit = '{memory_mb}MB'")
        # no progress bar on a long query: it goes to standard output, into task logs and whatever
        # reads a command's output (make bench-scoring's measure read one instead of its figures)
        con.execute("set enable_progress_bar = false")
        return ConnectionWrapper(con)

    return connect


def _duckdb_engine(settings: Settings) -> tuple[sa.Engine, Callable[[], Any]]:
    connect = _duckdb_connector(str(settings.duckdb_path), settings.warehouse.duckdb_memory_mb)
    # no pool: a connection closed is the file released for the next task's process
    return sa.create_engine("duckdb://", creator=connect, poolclass=sa.NullPool), connect


def _postgres_engine(settings: Settings) -> tuple[sa.Engine, Callable[[], Any]]:
    pg = settings.postgres
    if pg.embedded:
        from crm.embedded_postgres import ensure_postgres

        pg = ensure_postgres(settings)
    return _with_creator(sa.create_engine(pg.url(), pool_size=2, max_overflow=2, pool_pre_ping=True))


def _with_creator(engine: sa.Engine) -> tuple[sa.Engine, Callable[[], Any]]:
    """The engine, and a factory of DBAPI connections as its dialect makes them (public API)."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    return engine, lambda: engine.dialect.connect(*cargs, **cparams)


def _sqlserver_engine(azure: AzureSql, **options: Any) -> tuple[sa.Engine, Callable[[], Any]]:
    try:
        import pyodbc
    except ImportError as exc:
        raise WarehouseError(
            "the Azure SQL warehouse (CRM_DBT_TARGET=azure) needs unixODBC and the Microsoft ODBC Driver 18 for "
            f"SQL Server on this machine; pyodbc could not load: {exc}"
        ) from None
    if not any("SQL Server" in d for d in pyodbc.drivers()):
        raise WarehouseError(
            f"no SQL Server ODBC driver is installed (found: {pyodbc.drivers() or 'none'}); install the Microsoft "
            "ODBC Driver 18 for SQL Server (msodbcsql18), as docker/Dockerfile does"
        )
    url = sa.URL.create("mssql+pyodbc", query={"odbc_connect": azure.odbc_connection_string()})
    return _with_creator(sa.create_engine(url, **options))


def _stages_sqlserver_engine(settings: Settings) -> tuple[sa.Engine, Callable[[], Any]]:
    # array binding: one round trip per batch of an insert
    return _sqlserver_engine(settings.azure_sql, fast_executemany=True, pool_size=2, max_overflow=2,
                             pool_pre_ping=True)  # fmt: skip


def warehouse(settings: Settings) -> Warehouse:
    """The warehouse of ``settings`` (one engine per warehouse and process)."""
    name = engine_name(settings)
    key = (name, str(settings.duckdb_path), settings.warehouse.duckdb_memory_mb, repr(settings.postgres) if name == "postgresql"
           else "", settings.azure_sql.server if name == "mssql" else "")  # fmt: skip
    with _engines_lock:
        built = _engines.get(key)
        if built is None:
            build = {"duckdb": _duckdb_engine, "postgresql": _postgres_engine, "mssql": _stages_sqlserver_engine}[name]
            built = _engines[key] = build(settings)
    return Warehouse(built[0], name, built[1])


def analysts_warehouse(settings: Settings) -> Warehouse:
    """What analysts query (``crm sql``). On DuckDB, whose file the run holds while it writes, a
    database in memory of the analysts' own (one connection: what it creates stays for the session),
    over the published copy (``serving.analysts``); on a server, the warehouse itself as the
    analysts' role (``CRM_ANALYST_ROLE``), which dbt grants reads of ``marts``, ``snapshots`` and
    ``campaigns`` only."""
    name = engine_name(settings)
    analyst = settings.analyst
    if name == "duckdb":
        connect = _duckdb_connector(":memory:", settings.warehouse.duckdb_memory_mb)
        return Warehouse(sa.create_engine("duckdb://", creator=connect, poolclass=sa.StaticPool), name, connect)
    import dataclasses

    password = analyst.password
    if name == "postgresql":
        pg = settings.postgres
        if pg.embedded:
            from crm.embedded_postgres import ensure_postgres, passfile_password

            pg = ensure_postgres(settings)
            password = password or passfile_password(pg.passfile, analyst.role)
    if not password:
        raise SettingsError(f"no password for the analysts' role {analyst.role}: set CRM_ANALYST_PASSWORD")
    if name == "postgresql":
        pg = dataclasses.replace(pg, user=analyst.role, password=password, passfile=None)
        engine, creator = _with_creator(sa.create_engine(pg.url(), poolclass=sa.NullPool))
    else:
        azure = dataclasses.replace(settings.azure_sql, authentication="sql", user=analyst.role, password=password)
        engine, creator = _sqlserver_engine(azure, poolclass=sa.NullPool)
    return Warehouse(engine, name, creator)


def dispose_engines() -> None:
    """Close every pooled connection (a test that stops the server it used)."""
    with _engines_lock:
        for engine, _ in _engines.values():
            engine.dispose()
        _engines.clear()
