"""A throw-away DuckDB warehouse for dbt tests: raw tables made from the contracts, and the dbt
command line run against it."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from benchmarks.backfill import content_hash  # noqa: F401 (the tests' fingerprint of a relation)
from crm import warehouse
from crm.settings import Settings
from ingestion.raw_load import create_raw_tables
from ml.score import ASSIGNMENTS


def empty_raw_warehouse(directory: Path) -> Path:
    """``directory/warehouse.duckdb`` with an empty ``raw.<entity>`` table per contract and the empty
    assignments table the scoring step writes."""
    settings = Settings(home=directory)
    with warehouse.warehouse(settings).begin() as session:
        create_raw_tables(session)
        session.create(ASSIGNMENTS)
    return settings.duckdb_path


def run_dbt(directory: Path, *args: str, business_date: dt.date | str = "2026-11-27") -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project against ``directory``'s warehouse, target files in ``directory``."""
    return warehouse.run_dbt(*args, duckdb_path=directory / "warehouse.duckdb", business_date=business_date,
                             target="local", target_path=directory / "target")  # fmt: skip
