"""The warehouse's sessions: :class:`Warehouse` (connect to read, begin to write in one
transaction) and :class:`Session` (read a relation whole, as Arrow or in batches; write a frame as
a date's rows; delete a date's rows; run a statement), the same on every engine; and
:func:`fingerprint`, a query's rows hashed alike on every engine."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from crm.settings import Settings, SettingsError
from crm.warehouse.sql import Analyze, Statement, as_executable, insert_statement, metadata

# dbt's target -> the engine the stages use (the warehouse dbt builds is the one they read)
ENGINES = {"local": "duckdb", "postgres": "postgresql", "azure": "mssql"}


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


class Session:
    """One connection to the warehouse (inside a transaction with :meth:`Warehouse.begin`)."""

    def __init__(self, connection: sa.Connection, engine: str):
        self.connection = connection
        self.engine = engine

    def execute(self, statement: Statement, params: Mapping[str, Any] | list[Mapping] | None = None) -> int:
        """Run a statement (with one set of parameters, or a list for many); the rows it touched."""
        result = self.connection.execute(as_executable(statement), params)
        return result.rowcount if result.rowcount is not None else -1

    def rows(self, statement: Statement, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return [tuple(r) for r in self.connection.execute(as_executable(statement), params).fetchall()]

    def scalar(self, statement: Statement, params: Mapping[str, Any] | None = None) -> Any:
        return self.connection.execute(as_executable(statement), params).scalar()

    def _duckdb_relation(self, statement: Statement, params: Mapping[str, Any] | None):
        """The statement as a DuckDB relation: its columns handed over as Arrow, with no copy."""
        compiled = as_executable(statement).compile(
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
        result = self.connection.execute(as_executable(statement), params)
        columns = list(result.keys())
        return pa.Table.from_pandas(pd.DataFrame(result.fetchall(), columns=columns), preserve_index=False)

    def frame(self, statement: Statement, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        if self.engine == "duckdb":
            return self.arrow(statement, params).to_pandas()
        result = self.connection.execute(as_executable(statement), params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def batches(
        self, statement: Statement, params: Mapping[str, Any] | None = None, rows: int = 200_000
    ) -> Iterator[pd.DataFrame]:
        """The result ``rows`` at a time, streamed: the warehouse never hands over the whole of it."""
        if self.engine == "duckdb":
            reader = self._duckdb_relation(statement, params).to_arrow_reader(rows)
            try:
                for batch in reader:
                    yield batch.to_pandas()
            finally:  # left early (the reader raised): the connection's result closed, or nothing else runs on it
                reader.close()
            return
        result = self.connection.execution_options(stream_results=True, yield_per=rows).execute(
            as_executable(statement), params
        )
        try:
            columns = list(result.keys())
            for part in result.partitions():
                yield pd.DataFrame(part, columns=columns)
        finally:  # a pending cursor would keep the connection busy (SQL Server)
            result.close()

    def create(self, *tables: sa.Table) -> None:
        """The tables (and their schemas) when missing, in the engine's own DDL."""
        for schema in sorted({t.schema for t in tables if t.schema}):
            if not self.connection.dialect.has_schema(self.connection, schema):  # T-SQL has no IF NOT EXISTS
                self.connection.execute(sa.schema.CreateSchema(schema))
        metadata.create_all(self.connection, tables=list(tables), checkfirst=True)

    def has_table(self, table: str, schema: str) -> bool:
        return sa.inspect(self.connection).has_table(table, schema=schema)

    def add_missing_columns(self, table: sa.Table, fill: Mapping[str, Any]) -> list[str]:
        """Add the columns ``table`` declares that the warehouse's copy lacks (a table an older
        release made), set to ``fill[column]`` on the rows already there; the columns added.
        Read from ``information_schema``, which every engine has (duckdb-engine cannot reflect)."""
        present = {str(r[0]).lower() for r in self.rows(
            "select column_name from information_schema.columns where table_schema = :s and table_name = :t",
            {"s": table.schema, "t": table.name})}  # fmt: skip
        missing = [c for c in table.columns if c.name.lower() not in present]
        unfilled = [c.name for c in missing if c.name not in fill]
        if unfilled:
            raise WarehouseError(f"{table.schema}.{table.name} lacks {unfilled}, and nothing says what its rows hold")
        for column in missing:
            self.connection.execute(sa.text(add_column(column, self.connection.dialect)))
            if fill[column.name] is not None:  # a new column is empty already
                self.connection.execute(sa.update(table).values({column.name: fill[column.name]}))
        return [c.name for c in missing]

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


def add_column(column: sa.Column, dialect: sa.Dialect) -> str:
    """``ALTER TABLE`` adding ``column`` (nullable) to its table, in ``dialect``'s words (SQLAlchemy
    has no construct for it; T-SQL says ``ADD c type``, the others ``ADD COLUMN c type``)."""
    prepare = dialect.identifier_preparer
    add = "add" if dialect.name == "mssql" else "add column"
    return (f"alter table {prepare.format_table(column.table)} {add} {prepare.format_column(column)} "
            f"{column.type.compile(dialect=dialect)}")  # fmt: skip


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
                from crm.warehouse.engines import buffered_duckdb  # the drivers' module, which imports this one

                con = buffered_duckdb(self._creator())
                if schema:
                    con.execute(f"set search_path = '{schema},main'")
                return con

            return url, {"creator": connect}
        return url, {"creator": self._creator}

    def replace_date(
        self, table: sa.Table, column: str, day: dt.date, frame: pd.DataFrame, fill: Mapping[str, Any] | None = None
    ) -> int:
        """``day``'s rows of ``table`` become ``frame``'s, in one transaction (the table made when
        missing): a reader sees the old rows or the new, a rerun gives the same rows. With ``fill``,
        the columns an older release's table lacks are added first (:meth:`Session.add_missing_columns`)."""
        with self.begin() as s:
            s.create(table)
            if fill is not None:
                s.add_missing_columns(table, fill)
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
