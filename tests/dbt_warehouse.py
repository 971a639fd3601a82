"""A throw-away DuckDB warehouse for dbt tests: raw tables made from the contracts, and the dbt
command line run against it."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import duckdb

from benchmarks.backfill import content_hash  # noqa: F401 (the tests' fingerprint of a relation)
from crm import warehouse
from ingestion.load import create_raw_tables
from ml.score import create_assignments_table


def empty_raw_warehouse(directory: Path) -> Path:
    """``directory/warehouse.duckdb`` with an empty ``raw.<entity>`` table per contract and the empty
    assignments table the scoring step writes."""
    path = directory / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        create_raw_tables(con)
        create_assignments_table(con)
    return path


def run_dbt(directory: Path, *args: str, business_date: dt.date | str = "2026-11-27") -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project against ``directory``'s warehouse, target files in ``directory``."""
    return warehouse.run_dbt(*args, duckdb_path=directory / "warehouse.duckdb", business_date=business_date,
                             target="local", target_path=directory / "target")  # fmt: skip
