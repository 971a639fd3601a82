"""Shared fixtures: one data directory for the whole session, and its services stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import wait_until


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
    from crm.embedded_postgres import stop_postgres
    from crm.services import stop_redis, stop_sandbox
    from crm.settings import Settings

    yield home
    stop_sandbox(Settings(home=home))
    stop_redis(Settings(home=home))
    stop_postgres(Settings(home=home))
    # tests that work in a home of their own (home / "<name>") may leave its services: stop them too
    for run_dir in home.rglob("run"):
        if run_dir.is_dir() and run_dir.parent != home:
            stop_sandbox(Settings(home=run_dir.parent))
            stop_redis(Settings(home=run_dir.parent))
            stop_postgres(Settings(home=run_dir.parent))


@pytest.fixture(scope="session")
def settings(crm_home: Path):
    from crm.settings import get_settings

    s = get_settings()
    s.ensure_dirs()
    return s


@contextlib.contextmanager
def running_read_api(home: Path, env: dict[str, str] | None = None, ready: str = "/readyz") -> Iterator[str]:
    """``make serve`` as a user runs it (``entrypoints.cli serve``) on ``home`` (``env`` on top of
    this process's); yields its URL once ``ready`` answers 200."""
    import httpx

    from crm.services import free_port
    from crm.settings import REPO_ROOT

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)],
        env={**os.environ, "CRM_HOME": str(home), **(env or {})},
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers_ready() -> int | None:
        assert proc.poll() is None, f"crm serve exited ({proc.returncode}) before {ready} answered 200"
        try:
            return httpx.get(f"{url}{ready}").status_code
        except httpx.HTTPError:
            return None  # not listening yet

    try:
        wait_until(
            answers_ready,
            until=lambda status: status == 200,
            timeout=60,
            interval=0.2,
            message=f"crm serve to answer {ready} with 200",
        )
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
