"""The one way into the warehouse, on every engine.

Every stage after the raw load's files (the gates, scoring and the assignment's write, training and
its feature backfill, evaluation, publishing, retention) reads and writes the warehouse through
:class:`Warehouse`: read a relation (whole, as Arrow, or in batches), write a frame as a date's
rows in one transaction, delete a date's rows, run a statement. Statements are SQLAlchemy 2 Core
(``select()``, ``text()`` with bound parameters, tables of :data:`metadata`), so each engine's
dialect writes its own SQL: DuckDB (the embedded default, ``CRM_DBT_TARGET=local``, through
duckdb-engine), PostgreSQL (``postgres``) and SQL Server / Azure SQL (``azure``). No other module
imports a database driver (an import-linter contract in ``make lint``); decision 0017 says why.

DuckDB allows one writing process, and within a process every connection to a file must share
one configuration (dbt-duckdb, running in-process under ``airflow dags test``, keeps one open): so
DuckDB connections are opened here, read-write, with the settings dbt's profile gives, one per use
(nothing pooled keeps the file locked), and every task that touches the warehouse runs in the
Airflow pool ``crm_warehouse``, of one slot on DuckDB. The server engines pool their connections;
there the pool has ``CRM_WAREHOUSE_POOL_SLOTS`` slots, and the tasks that write what every date
shares take all of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from crm.settings import DBT_PROJECT_DIR, AzureSql, Settings, SettingsError, environment, yesterday_in_lima

# dbt's target -> the engine the stages use (the warehouse dbt builds is the one they read)
ENGINES = {"local": "duckdb", "postgres": "postgresql", "azure": "mssql"}

metadata = sa.MetaData()


class stddev_pop(sa.sql.functions.GenericFunction):
    """The population standard deviation: ``STDEVP`` in T-SQL, ``stddev_pop`` elsewhere."""

    type = sa.Double()
    inherit_cache = True


@compiles(stddev_pop, "mssql")
def _stdevp(element, compiler, **kw) -> str:
    return f"STDEVP({compiler.process(element.clauses, **kw)})"


class days_after(sa.sql.functions.GenericFunction):
    """``days_after(date, n)``: the date ``n`` days after (before, when negative) ``date``:
    ``DATEADD(day, n, date)`` in T-SQL, ``date + n`` on DuckDB and PostgreSQL."""

    type = sa.Date()
    inherit_cache = True


@compiles(days_after)
def _days_after(element, compiler, **kw) -> str:
    day, n = list(element.clauses)
    return f"({compiler.process(day, **kw)} + {compiler.process(n, **kw)})"


@compiles(days_after, "mssql")
def _dateadd(element, compiler, **kw) -> str:
    day, n = list(element.clauses)
    return f"DATEADD(day, {compiler.process(n, **kw)}, {compiler.process(day, **kw)})"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached, or a statement failed: the message names which."""


def engine_name(settings: Settings) -> str:
    """The warehouse's engine for the settings' dbt target (``CRM_DBT_TARGET``)."""
    try:
        return ENGINES[settings.dbt_target]
    except KeyError:
        raise SettingsError(
            f"CRM_DBT_TARGET must be one of {', '.join(ENGINES)}, got {settings.dbt_target!r}"
        ) from None


Statement = sa.Executable | str


class Analyze(sa.sql.expression.Executable, sa.sql.expression.ClauseElement):
    """``ANALYZE table`` (PostgreSQL); ``UPDATE STATISTICS table`` in T-SQL."""

    inherit_cache = False

    def __init__(self, table: sa.Table):
        self.table = table


@compiles(Analyze)
def _analyze(element, compiler, **kw) -> str:
    return f"ANALYZE {compiler.preparer.format_table(element.table)}"


@compiles(Analyze, "mssql")
def _update_statistics(element, compiler, **kw) -> str:
    return f"UPDATE STATISTICS {compiler.preparer.format_table(element.table)}"


def insert_statement(table: sa.Table) -> sa.Insert:
    """The insert a server that takes rows as parameters (SQL Server) gets, a batch of rows at a time."""
    return sa.insert(table)


def _statement(statement: Statement) -> sa.Executable:
    return sa.text(statement) if isinstance(statement, str) else statement


class Session:
    """One connection to the warehouse (inside a transaction with :meth:`Warehouse.begin`)."""

    def __init__(self, connection: sa.Connection, engine: str):
        self.connection = connection
        self.engine = engine

    def execute(self, statement: Statement, params: Mapping[str, Any] | list[Mapping] | None = None) -> int:
        """Run a statement (with one set of parameters, or a list for many); the rows it touched."""
        result = self.connection.execute(_statement(statement), params)
        return result.rowcount if result.rowcount is not None else -1

    def rows(self, statement: Statement, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return [tuple(r) for r in self.connection.execute(_statement(statement), params).fetchall()]

    def scalar(self, statement: Statement, params: Mapping[str, Any] | None = None) -> Any:
        return self.connection.execute(_statement(statement), params).scalar()

    def _duckdb_relation(self, statement: Statement, params: Mapping[str, Any] | None):
        """The statement as a DuckDB relation: its columns handed over as Arrow, with no copy."""
        compiled = _statement(statement).compile(
            dialect=self.connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = compiled.construct_params(params or {})
        positional = [values[name] for name in compiled.positiontup or []]
        raw = self.connection.connection.driver_connection
        return raw.sql(str(compiled), params=positional or None)

    def arrow(self, statement: Statement, params: Mapping[str, Any] | None = None) -> pa.Table:
        """The whole result as an Arrow table (DuckDB hands over its own columns)."""
        if self.engine == "duckdb":
            return self._duckdb_relation(statement, params).to_arrow_table()
        result = self.connection.execute(_statement(statement), params)
        columns = list(result.keys())
        return pa.Table.from_pandas(pd.DataFrame(result.fetchall(), columns=columns), preserve_index=False)

    def frame(self, statement: Statement, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        if self.engine == "duckdb":
            return self.arrow(statement, params).to_pandas()
        result = self.connection.execute(_statement(statement), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def batches(
        self, statement: Statement, params: Mapping[str, Any] | None = None, rows: int = 200_000
    ) -> Iterator[pd.DataFrame]:
        """The result ``rows`` at a time, streamed: the warehouse never hands over the whole of it."""
        if self.engine == "duckdb":
            for batch in self._duckdb_relation(statement, params).to_arrow_reader(rows):
                yield batch.to_pandas()
            return
        result = self.connection.execution_options(stream_results=True, yield_per=rows).execute(
            _statement(statement), params
        )
        columns = list(result.keys())
        for part in result.partitions():
            yield pd.DataFrame(part, columns=columns)

    def create(self, *tables: sa.Table) -> None:
        """The tables (and their schemas) when missing, in the engine's own DDL."""
        for schema in sorted({t.schema for t in tables if t.schema}):
            if not self.connection.dialect.has_schema(self.connection, schema):  # T-SQL has no IF NOT EXISTS
                self.connection.execute(sa.schema.CreateSchema(schema))
        metadata.create_all(self.connection, tables=list(tables), checkfirst=True)

    def has_table(self, table: str, schema: str) -> bool:
        return sa.inspect(self.connection).has_table(table, schema=schema)

    def insert_frame(self, table: sa.Table, frame: pd.DataFrame) -> int:
        """Insert a frame's rows (its columns by name) into ``table``; rows inserted."""
        if frame.empty:
            return 0
        if self.engine == "duckdb":  # DuckDB reads the frame in place, no row-by-row binding
            self._duckdb_insert(table, frame)
            return len(frame)
        if self.engine == "postgresql":
            return self._copy(table, pa.Table.from_pandas(frame, preserve_index=False).to_batches())
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        self.connection.execute(insert_statement(table), records)
        return len(records)

    def insert_parquet(
        self, table: sa.Table, files: list[Path], constants: Mapping[str, Any], batch_rows: int = 50_000
    ) -> int:
        """Insert Parquet files' rows (their columns by name) with ``constants`` as further columns
        into ``table``; rows inserted. DuckDB reads the files itself, in parallel; a server gets
        them ``batch_rows`` at a time (bounded memory): PostgreSQL by ``COPY``, SQL Server as one
        parameterised insert per batch (pyodbc's ``fast_executemany``)."""
        import pyarrow.parquet as pq

        rows = sum(pq.read_metadata(f).num_rows for f in files)
        if self.engine == "duckdb":
            raw = self.connection.connection.driver_connection
            target = self.connection.dialect.identifier_preparer.format_table(table)
            names = ", ".join(f'${i + 2} as "{c}"' for i, c in enumerate(constants))
            raw.execute(
                f"insert into {target} by name select *, {names} from read_parquet($1, hive_partitioning = false)",
                [[str(f) for f in files], *constants.values()],
            )
            return rows

        def with_constants() -> Iterator[pa.RecordBatch]:
            for path in files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                    extra = [pa.array([value] * batch.num_rows) for value in constants.values()]
                    yield pa.RecordBatch.from_arrays([*batch.columns, *extra], [*batch.schema.names, *constants])

        if self.engine == "postgresql":
            self._copy(table, with_constants())
            return rows
        for batch in with_constants():
            if batch.num_rows:
                self.connection.execute(insert_statement(table), batch.to_pylist())
        return rows

    def _copy(self, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
        """PostgreSQL's ``COPY ... FROM STDIN`` of Arrow batches written as CSV (an empty field is
        NULL, a quoted one an empty string): the server parses the rows, none bound one by one."""
        import pyarrow.csv as csv

        quote = self.connection.dialect.identifier_preparer
        target, copied = quote.format_table(table), 0
        with contextlib.closing(self.connection.connection.driver_connection.cursor()) as cursor:
            for batch in batches:
                if not batch.num_rows:
                    continue
                buffer = io.BytesIO()
                csv.write_csv(batch, buffer, csv.WriteOptions(include_header=False))
                buffer.seek(0)
                columns = ", ".join(quote.quote(c) for c in batch.schema.names)
                # Arrow writes UTF-8: said, not left to the session's client_encoding
                statement = f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"
                try:
                    cursor.copy_expert(statement, buffer)
                except self.connection.dialect.loaded_dbapi.Error as error:  # as SQLAlchemy raises the others
                    raise sa.exc.DBAPIError.instance(
                        statement, None, error, self.connection.dialect.loaded_dbapi.Error
                    ) from error
                copied += batch.num_rows
        return copied

    def analyze(self, table: sa.Table) -> None:
        """Fresh statistics of ``table`` for the server's planner after a load (PostgreSQL's
        autovacuum and SQL Server's auto-update come later than the next statement); DuckDB keeps
        its own as it writes."""
        if self.engine != "duckdb":
            self.connection.execute(Analyze(table))

    def write_parquet(self, statement: Statement, path: Path, params: Mapping[str, Any] | None = None) -> int:
        """A query's rows into one Parquet file at ``path`` (zstd), DuckDB writing it; rows written."""
        import pyarrow.parquet as pq

        if self.engine != "duckdb":  # on a server analysts read the warehouse itself: nothing to copy
            raise WarehouseError(f"write_parquet copies DuckDB's rows (the analysts' copy), not {self.engine}'s")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._duckdb_relation(statement, params).write_parquet(str(path), compression="zstd")  # in parallel
        return pq.read_metadata(path).num_rows

    def _duckdb_insert(self, table: sa.Table, source: Any) -> None:
        raw = self.connection.connection.driver_connection
        name = f"_source_{threading.get_ident()}"
        raw.register(name, source)
        try:
            target = self.connection.dialect.identifier_preparer.format_table(table)
            raw.execute(f"insert into {target} by name select * from {name}")
        finally:
            raw.unregister(name)

    def replace_date(self, table: sa.Table, column: str, day: dt.date, frame: pd.DataFrame) -> int:
        """``day``'s rows of ``table`` become ``frame``'s (call inside :meth:`Warehouse.begin`)."""
        self.connection.execute(sa.delete(table).where(table.c[column] == day))
        return self.insert_frame(table, frame)


class Warehouse:
    """The warehouse of a settings' dbt target: :meth:`connect` to read, :meth:`begin` to write in
    one transaction; the one-call forms (:meth:`rows`, :meth:`frame`, ...) read on a connection of
    their own."""

    def __init__(self, engine: sa.Engine, name: str, creator: Callable[[], Any]):
        self.engine = engine
        self.name = name
        self._creator = creator  # a new DBAPI connection, as the engine's pool makes them

    @contextlib.contextmanager
    def connect(self) -> Iterator[Session]:
        with self.engine.connect() as connection:
            yield Session(connection, self.name)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:
        with self.engine.begin() as connection:
            yield Session(connection, self.name)

    def rows(self, statement: Statement, params: Mapping[str, Any] | None = None) -> list[tuple]:
        with self.connect() as s:
            return s.rows(statement, params)

    def scalar(self, statement: Statement, params: Mapping[str, Any] | None = None) -> Any:
        with self.connect() as s:
            return s.scalar(statement, params)

    def frame(self, statement: Statement, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.connect() as s:
            return s.frame(statement, params)

    def arrow(self, statement: Statement, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self.connect() as s:
            return s.arrow(statement, params)

    def execute(self, statement: Statement, params: Mapping[str, Any] | None = None) -> int:
        with self.begin() as s:
            return s.execute(statement, params)

    def has_table(self, table: str, schema: str) -> bool:
        with self.connect() as s:
            return s.has_table(table, schema)

    def engine_arguments(self, schema: str | None = None) -> tuple[str, dict[str, Any]]:
        """(URL, ``create_engine`` keyword arguments) with which another SQLAlchemy user (Great
        Expectations' SQL data source) reaches this warehouse as the interface does: the same
        connections, made by the interface's own factory. On DuckDB, ``schema`` is searched first:
        duckdb-engine cannot reflect a table (it sends PostgreSQL's catalog queries), and GX's
        fallback names the table without its schema."""
        # the dialect only: the creator holds the connection's details and secret (SQL Server's are in
        # the URL's odbc_connect query, which the URL's own masking does not hide)
        url = self.engine.url.set(password=None, query={}).render_as_string()
        if self.name == "duckdb":
            # GX closes a connection before it reads the rows of some queries; a cursor that holds
            # its rows keeps them (DuckDB's results belong to the connection)
            def connect():
                con = _buffered_duckdb(self._creator())
                if schema:
                    con.execute(f"set search_path = '{schema},main'")
                return con

            return url, {"creator": connect}
        return url, {"creator": self._creator}

    def replace_date(self, table: sa.Table, column: str, day: dt.date, frame: pd.DataFrame) -> int:
        """``day``'s rows of ``table`` become ``frame``'s, in one transaction (the table made when
        missing): a reader sees the old rows or the new, a rerun gives the same rows."""
        with self.begin() as s:
            s.create(table)
            return s.replace_date(table, column, day, frame)

    def delete_before(self, table: sa.Table, column: str, cutoff: dt.date) -> int:
        """Delete the rows of ``table`` whose ``column`` is before ``cutoff``; rows deleted."""
        with self.begin() as s:
            if not s.has_table(table.name, table.schema):
                return 0
            return s.execute(sa.delete(table).where(table.c[column] < cutoff))


def _canonical(value: Any) -> str:
    """One value as every engine's driver gives it back alike: decimals and whole floats without
    trailing zeros, floats to 9 significant digits, dates as ISO text, booleans as 0 and 1."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, decimal.Decimal | float | int):
        number = decimal.Decimal(repr(value) if isinstance(value, float) else value)
        if isinstance(value, float):
            number = round(number, max(0, 9 - number.adjusted() - 1))
        text = format(number.normalize(), "f") if number != 0 else "0"
        return text
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def fingerprint(session: Session, statement: Statement, params: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """(rows, SHA-256) of a query's rows, in no set order: equal on two engines when they hold the
    same rows, whatever each one's types make of them (``decimal(12, 2)`` or ``numeric``)."""
    rows = sorted("|".join(map(_canonical, row)) for row in session.rows(statement, params))
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode() + b"\n")
    return len(rows), digest.hexdigest()[:16]


# ---- the connections -----------------------------------------------------------------------

_engines: dict[tuple, tuple[sa.Engine, Callable[[], Any]]] = {}
_engines_lock = threading.Lock()


def _buffered_duckdb(wrapped):
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
        yield "duckdb:///:memory:", {"creator": lambda: _buffered_duckdb(database.cursor())}
    finally:
        database.close()
        shutil.rmtree(spill, ignore_errors=True)


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
        return ConnectionWrapper(con)

    return connect


def _duckdb_engine(settings: Settings) -> tuple[sa.Engine, Callable[[], Any]]:
    connect = _duckdb_connector(str(settings.duckdb_path), settings.duckdb_memory_mb)
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
    key = (name, str(settings.duckdb_path), settings.duckdb_memory_mb, repr(settings.postgres) if name == "postgresql"
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
        connect = _duckdb_connector(":memory:", settings.duckdb_memory_mb)
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


def dbt_env(settings: Settings) -> dict[str, str]:
    """What dbt's profile reads to reach the settings' warehouse: the target, the DuckDB file, and
    on ``postgres`` the server (the embedded one started when it is the one)."""
    env = {"CRM_DBT_TARGET": settings.dbt_target, "CRM_DUCKDB_PATH": str(settings.duckdb_path)}
    if engine_name(settings) == "postgresql":
        pg = settings.postgres
        if pg.embedded:
            from crm.embedded_postgres import ensure_postgres

            pg = ensure_postgres(settings)
        env.update(pg.dbt_env())
    elif engine_name(settings) == "mssql":  # the Connection crm_warehouse's, or CRM_AZURE_SQL_*
        env.update(settings.azure_sql.dbt_env())
    env["CRM_ANALYST_ROLE"] = settings.analyst.role  # whom dbt grants the marts' reads
    return env


def _profile_env(duckdb_path, business_date, target, settings: Settings | None = None) -> dict[str, str]:
    """What the project's ``profiles.yml`` and macros read from the environment, where given."""
    given = {"CRM_DUCKDB_PATH": duckdb_path, "CRM_BUSINESS_DATE": business_date, "CRM_DBT_TARGET": target}
    warehouse_env = dbt_env(settings) if settings is not None else {}
    return {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **warehouse_env,
            **{k: str(v) for k, v in given.items() if v is not None}}  # fmt: skip


def _target_path(target_path: Path | None) -> list[str]:
    return [] if target_path is None else ["--target-path", str(target_path)]


def run_dbt(
    *args: str,
    duckdb_path: Path | None = None,
    business_date: dt.date | str | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    capture: bool = True,
    settings: Settings | None = None,
) -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project with its own ``profiles.yml``: the warehouse file, the business
    date (``CRM_BUSINESS_DATE``) and the target (``CRM_DBT_TARGET``) go in as environment variables,
    each left as the environment has it when not given."""
    env = {**os.environ, **_profile_env(duckdb_path, business_date, target, settings)}
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", *_target_path(target_path)]
    return subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=capture, text=True, check=False)


def run_dbt_in_process(
    *args: str,
    duckdb_path: Path,
    business_date: dt.date | str,
    target: str,
    target_path: Path | None = None,
    settings: Settings | None = None,
) -> tuple[bool, str]:
    """``dbt <args>`` inside this process (dbt's programmatic ``dbtRunner``), as the DAG's dbt tasks
    run: (success, the error if any). A task that runs dbt more than once uses this one: a dbt
    subprocess could not open the DuckDB file that dbt-duckdb, having run in this process under
    ``airflow dags test``, keeps open, and each in-process call saves dbt's start-up."""
    from dbt.cli.main import dbtRunner

    env = _profile_env(duckdb_path, business_date, target, settings)
    cmd = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        *_target_path(target_path),
    ]
    with environment(env):
        result = dbtRunner().invoke(cmd)
    if result.success:
        return True, ""
    if result.exception is not None:
        return False, f"{type(result.exception).__name__}: {result.exception}"
    failed = [r for r in (result.result or []) if getattr(r, "status", None) in ("error", "fail")]
    return False, "; ".join(f"{r.node.name}: {r.message}" for r in failed) or "dbt failed"


def dbt_command(settings: Settings, *args: str) -> int:
    """The dbt command line on the project against the local warehouse, its output shown (``make
    docs``, the manifest Cosmos renders from); the business date the compiled SQL shows is
    ``CRM_BUSINESS_DATE`` or yesterday's."""
    business_date = os.environ.get("CRM_BUSINESS_DATE") or yesterday_in_lima()
    return run_dbt(*args, business_date=business_date, capture=False, settings=settings).returncode


def dbt_docs(settings: Settings, target: Path) -> int:
    """Generate the dbt docs site (models, columns, tests, lineage, the warehouse's catalog) into
    ``target``: dbt's exit code."""
    settings.ensure_dirs()
    if not settings.duckdb_path.exists() and engine_name(settings) == "duckdb":
        print("no warehouse yet: the site will describe the models without their tables (run make demo first)")
    return dbt_command(settings, "docs", "generate", "--target-path", str(target), "--quiet")
