"""The local Airflow installation: its environment, metadata database and pool, in the data dir."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from crm.settings import REPO_ROOT, Settings

API_PORT = 8080
STARTING = re.compile(r"\[DAG TEST\] starting task_id=([\w.]+)(?: map_index=(-?\d+))?")


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
        # SQLite lets one writer at a time: wait up to 60 s for the lock (Python's default is 5 s; a
        # 30-day backfill's creation, beside the scheduler, failed with "database is locked", and the
        # scheduler then died on the runs the failed creation rolled back)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{API_PORT}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # task logs carry what the tasks did (counts, ids): the user's alone, as the rest of .crm/
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
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


def _failure_cause(log_text: str) -> str:
    """The last exception line of a failed run's log (what a user needs to see first)."""
    lines = [ln for ln in log_text.splitlines() if re.search(r"\b\w+(Error|Exception|Failed|Exceeded|Mismatch)\b:", ln)]
    return lines[-1].strip()[:600] if lines else "see the log"


def run_dag_test(dag_id: str, logical_date: dt.date, conf: dict, settings: Settings, quiet: bool = False) -> int:
    """Run ``dag_id`` for ``logical_date`` through ``airflow dags test``, naming each task as it
    starts; 0 when the run succeeded, else 1 after naming the failed stage and its cause."""
    settings.ensure_dirs()
    prepare_airflow(settings)
    log_path = settings.home / "runs" / f"{dag_id}_{logical_date}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(settings, {"CRM_TASK_RETRIES": "0"})
    cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id, logical_date.isoformat(),
           "-c", json.dumps(conf)]  # fmt: skip
    print(f"running {dag_id} for {logical_date} through Airflow (airflow dags test); log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = STARTING.search(line)
            if m and not quiet:
                print(f"  {m.group(1)}{'' if m.group(2) in (None, '-1') else '[' + m.group(2) + ']'}", flush=True)
        rc = proc.wait()
    text = log_path.read_text()
    finished = re.search(r"DagRun Finished:[^\n]*state=(\w+)", text)
    if rc == 0 and finished is not None and finished.group(1) == "success":
        return 0
    failed = []
    if "Task failed with exception" in text:
        before_failure = text[: text.index("Task failed with exception")]
        failed = [m.group(1) for m in STARTING.finditer(before_failure)][-1:]
    stage = failed[0] if failed else dag_id
    print(f"\n{dag_id} FAILED for {logical_date} at stage {stage}: {_failure_cause(text)}", flush=True)
    print(f"Full log: {log_path}", flush=True)
    return 1


def standalone(settings: Settings) -> int:
    """``airflow standalone`` on the project's DAGs, until Ctrl-C."""
    settings.ensure_dirs()
    prepare_airflow(settings)
    pw = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    print(f"starting Airflow (airflow standalone) on http://localhost:{API_PORT}", flush=True)
    print(f"log in as admin; the password is in {pw} once it has started. Ctrl-C stops it.", flush=True)
    try:
        return airflow(["standalone"], settings).returncode
    except KeyboardInterrupt:
        return 0


def _health(timeout_s: float = 2.0) -> dict | None:
    """The Airflow API server's health answer (``make airflow``'s, or one started for a backfill)."""
    import httpx

    try:
        return httpx.get(f"http://localhost:{API_PORT}/api/v2/monitor/health", timeout=timeout_s).json()
    except (httpx.HTTPError, ValueError):
        return None


def scheduler_healthy() -> bool:
    """Whether the Airflow API server answers and says its scheduler is healthy."""
    return ((_health() or {}).get("scheduler") or {}).get("status") == "healthy"


def api_server_up() -> bool:
    """Whether an Airflow API server answers."""
    return _health() is not None


def start_standalone(settings: Settings, wait_s: float = 300.0) -> subprocess.Popen:
    """``airflow standalone`` in the background (its own process group, output in the data dir's
    runs/), once its API server and scheduler answer; stop it with :func:`stop_standalone`."""
    import time

    log_path = settings.home / "runs" / "airflow-standalone.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=airflow_env(settings),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)  # fmt: skip
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone stopped (exit {proc.returncode}); see {log_path}")
        if scheduler_healthy():
            return proc
        time.sleep(2)
    stop_standalone(proc)
    raise RuntimeError(f"airflow standalone did not become healthy in {wait_s:.0f} s; see {log_path}")


def stop_standalone(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def dag_runs(dag_id: str, settings: Settings) -> list[dict]:
    """``dag_id``'s runs as Airflow lists them (``airflow dags list-runs -o json``)."""
    done = airflow(["dags", "list-runs", dag_id, "-o", "json"], settings, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow dags list-runs failed: {done.stderr[-1000:]}")
    return json.loads(next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("[")), "[]"))


def unpause(dag_id: str, settings: Settings, wait_s: float = 180.0) -> bool:
    """Unpause ``dag_id`` once the DAG processor has put it in the metadata database (a fresh
    standalone parses it shortly); False when it is not there after ``wait_s``."""
    import time

    deadline = time.monotonic() + wait_s
    while airflow(["dags", "unpause", dag_id], settings, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(3)
    return True


OPEN_BACKFILLS = (
    "import sys\n"
    "from sqlalchemy import func, select\n"
    "from airflow.models.backfill import Backfill\n"
    "from airflow.utils.session import create_session\n"
    "with create_session() as s:\n"
    "    print(s.scalar(select(func.count()).select_from(Backfill).where(Backfill.dag_id == sys.argv[1],"
    " Backfill.completed_at.is_(None))))\n"
)


def open_backfills(dag_id: str, settings: Settings) -> int:
    """``dag_id``'s backfills the scheduler has not marked completed (it does so a loop after their
    last run ends; Airflow allows one open backfill per DAG), from Airflow's metadata database."""
    done = subprocess.run([sys.executable, "-c", OPEN_BACKFILLS, dag_id], env=airflow_env(settings),
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1])
