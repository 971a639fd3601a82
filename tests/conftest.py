"""Shared fixtures: one data directory for the whole session, and its services stopped at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def crm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh CRM_HOME for the session; every embedded service started in it is stopped after."""
    home = tmp_path_factory.mktemp("crm")
    os.environ["CRM_HOME"] = str(home)
    os.environ["AIRFLOW_HOME"] = str(home / "airflow")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    for var, value in {
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "SCARF_NO_ANALYTICS": "true",
    }.items():
        os.environ.setdefault(var, value)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "dags")
    os.environ.pop("CRM_DUCKDB_PATH", None)
    os.environ.pop("CRM_REDIS_URL", None)
    os.environ.pop("CRM_CORE_API_URL", None)
    from crm.services import stop_redis, stop_sandbox

    yield home
    stop_sandbox()
    stop_redis()


@pytest.fixture(scope="session")
def settings(crm_home: Path):
    from crm.settings import get_settings

    s = get_settings()
    s.ensure_dirs()
    return s
