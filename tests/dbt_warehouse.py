"""A throw-away DuckDB warehouse for dbt tests: raw tables made from the contracts, and the dbt
command line run against it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from crm.settings import REPO_ROOT
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
    env = {
        **os.environ,
        "CRM_DUCKDB_PATH": str(directory / "warehouse.duckdb"),
        "CRM_DBT_TARGET": "local",
        "CRM_BUSINESS_DATE": str(business_date),
    }
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", "--target-path",
           str(directory / "target")]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO_ROOT / "dbt_project", env=env, capture_output=True, text=True, check=False)
