"""Connections to the local warehouse (DuckDB).

DuckDB allows one writing process, and within a process every connection to a file must share
one configuration (dbt-duckdb, running in-process under ``airflow dags test``, keeps a read-write
one open). So every connection is opened read-write, and every task that touches the warehouse
runs in the Airflow pool ``crm_duckdb`` of one slot.
"""

from __future__ import annotations

from crm.settings import Settings


def connect(settings: Settings):
    import duckdb

    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(settings.duckdb_path))
