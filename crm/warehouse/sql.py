"""The warehouse's SQL constructs that each engine's dialect writes its own way (SQLAlchemy
``@compiles``): the tables' metadata, the population standard deviation, date arithmetic,
``ANALYZE``, and the statements the stages hand the warehouse."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

metadata = sa.MetaData()


def as_date(value) -> dt.date:
    """A DATE column's value as a date, however the engine's driver returned it (a date, a datetime
    from SQL Server's, a string)."""
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


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


def as_executable(statement: Statement) -> sa.Executable:
    return sa.text(statement) if isinstance(statement, str) else statement
