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

The package's rooms: ``session`` (the interface), ``sql`` (the constructs each dialect writes its
own way), ``engines`` (the connections, and the only imports of a driver) and ``dbt_runs`` (dbt on
the same warehouse).
"""

from crm.warehouse.dbt_runs import dbt_command, dbt_docs, dbt_env, run_dbt, run_dbt_in_process
from crm.warehouse.engines import analysts_warehouse, dispose_engines, parquet_view, scratch_duckdb, warehouse
from crm.warehouse.session import ENGINES, Session, Warehouse, WarehouseError, add_column, engine_name, fingerprint
from crm.warehouse.sql import Analyze, Statement, as_date, days_after, insert_statement, metadata, stddev_pop

__all__ = [
    "ENGINES",
    "Analyze",
    "Session",
    "Statement",
    "Warehouse",
    "WarehouseError",
    "add_column",
    "analysts_warehouse",
    "as_date",
    "days_after",
    "dbt_command",
    "dbt_docs",
    "dbt_env",
    "dispose_engines",
    "engine_name",
    "fingerprint",
    "insert_statement",
    "metadata",
    "parquet_view",
    "run_dbt",
    "run_dbt_in_process",
    "scratch_duckdb",
    "stddev_pop",
    "warehouse",
]
