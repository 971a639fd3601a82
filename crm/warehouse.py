"""Connections to the local warehouse (DuckDB).

DuckDB allows one writing process, and within a process every connection to a file must share
one configuration (dbt-duckdb, running in-process under ``airflow dags test``, keeps a read-write
one open). So every connection is opened read-write, and every task that touches the warehouse
runs in the Airflow pool ``crm_duckdb`` of one slot.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from crm.settings import DBT_PROJECT_DIR, Settings


def connect(settings: Settings):
    import duckdb

    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(settings.duckdb_path))


def run_dbt(
    *args: str,
    duckdb_path: Path | None = None,
    business_date: dt.date | str | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project with its own ``profiles.yml``: the warehouse file, the business
    date (``CRM_BUSINESS_DATE``) and the target (``CRM_DBT_TARGET``) go in as environment variables,
    each left as the environment has it when not given."""
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    for name, value in (("CRM_DUCKDB_PATH", duckdb_path), ("CRM_BUSINESS_DATE", business_date),
                        ("CRM_DBT_TARGET", target)):  # fmt: skip
        if value is not None:
            env[name] = str(value)
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", "."]
    if target_path is not None:
        cmd += ["--target-path", str(target_path)]
    return subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=capture, text=True, check=False)
