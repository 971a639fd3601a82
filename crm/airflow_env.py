"""The local Airflow installation: its environment, metadata database and pool, in the data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crm.settings import Settings

API_PORT = 8080


def airflow_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every ``airflow`` command of the project runs with."""
    home = settings.airflow_home
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone spawns `airflow`
        "CRM_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{API_PORT}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__COSMOS__CACHE_DIR": str(settings.home / "cosmos"),  # partial parses reused across tasks
        "AIRFLOW__API__HOST": "127.0.0.1",
        # no usage telemetry leaves the machine
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        "SCARF_NO_ANALYTICS": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    env.update(extra or {})
    return env


def airflow(args: list[str], settings: Settings, **kwargs) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(cmd, env=airflow_env(settings), check=False, **kwargs)


def prepare_airflow(settings: Settings) -> None:
    """Create or migrate the metadata database and the warehouse pool (idempotent, quiet)."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    for args in (
        ["db", "migrate"],
        ["pools", "set", "crm_duckdb", "1", "DuckDB allows one writing process"],
    ):
        done = airflow(args, settings, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
