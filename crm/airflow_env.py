"""The local Airflow installation: its environment, metadata database and pool, in the data dir."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from crm.settings import REPO_ROOT, WAREHOUSE_POOL, Settings

API_PORT = 8080
# crm_daily's dbt parse cache, a folder of Cosmos's cache folder (AIRFLOW__COSMOS__CACHE_DIR)
DBT_PARSE_CACHE_NAME = "crm_dbt"


def cosmos_cache_dir(settings: Settings) -> Path:
    """Cosmos's cache folder of the local installation."""
    return settings.home / "cosmos"


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
        "AIRFLOW__COSMOS__CACHE_DIR": str(cosmos_cache_dir(settings)),  # partial parses reused across tasks
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
    # lineage (entrypoints/lineage_report.py): one JSON file per OpenLineage event, unless Airflow's own
    # configuration names a transport (the bank's lineage server)
    if not env.get("AIRFLOW__OPENLINEAGE__TRANSPORT") and not env.get("OPENLINEAGE_URL"):
        lineage_dir(settings).mkdir(parents=True, exist_ok=True, mode=0o700)
        transport = {"type": "file", "log_file_path": str(lineage_dir(settings) / "event"), "append": False}
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(transport)
    env.setdefault("AIRFLOW__OPENLINEAGE__NAMESPACE", "crm")
    env.update(extra or {})
    return env


def lineage_dir(settings: Settings) -> Path:
    """Where a local Airflow's OpenLineage events go, one file each (``event-<time>.json``)."""
    return settings.home / "lineage"


EXECUTORS = ("local", "celery")
WORKER_NAME = "CRM_AIRFLOW_WORKER"  # set in each local Celery worker's environment: its name


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` for the local Celery workers: the worker's name (so the UI
    and ``task_instance.hostname`` tell the two workers of one machine apart), else the host's."""
    import socket

    return os.environ.get(WORKER_NAME) or socket.getfqdn()


def celery_env(settings: Settings, concurrency: int) -> dict[str, str]:
    """CeleryExecutor on the embedded Redis (started when needed): the broker in its database 1 and
    the task results in database 2, beside the cache's 0. A broker named in Airflow's own
    configuration (``AIRFLOW__CELERY__BROKER_URL``) wins: no silent fallback to the embedded one."""
    from crm.services import embedded_redis_url, ensure_redis

    env = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "crm.airflow_env.worker_hostname",
    }
    if not os.environ.get("AIRFLOW__CELERY__BROKER_URL"):
        url = ensure_redis(settings)
        if url != embedded_redis_url(settings):
            raise RuntimeError(
                "CRM_REDIS_URL names the cache's Redis; name Celery's broker and result backend in "
                "AIRFLOW__CELERY__BROKER_URL and AIRFLOW__CELERY__RESULT_BACKEND"
            )
        sock = url.removeprefix("unix://")
        env["AIRFLOW__CELERY__BROKER_URL"] = f"redis+socket://{sock}?virtual_host=1"
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"redis+socket://{sock}?virtual_host=2"
    return env


class LocalAirflow:
    """Airflow on this machine, in the background, as ``make airflow`` runs it: ``airflow
    standalone`` (LocalExecutor), or with ``executor="celery"`` its components one process each
    (API server, scheduler, DAG processor, triggerer) and ``workers`` Celery workers of
    ``concurrency`` task slots each, on the embedded Redis as the broker. Each process logs to
    ``<CRM_HOME>/runs/airflow-<component>.log``."""

    def __init__(self, settings: Settings, executor: str = "local", workers: int = 2, concurrency: int = 2):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if workers < 1 or concurrency < 1:
            raise ValueError(f"workers and concurrency must be at least 1, got {workers} and {concurrency}")
        self.settings, self.executor, self.workers, self.concurrency = settings, executor, workers, concurrency
        self.processes: dict[str, subprocess.Popen] = {}

    def components(self) -> dict[str, list[str]]:
        if self.executor == "local":
            return {"standalone": ["standalone"]}
        out = {name: [name] for name in ("api-server", "scheduler", "dag-processor", "triggerer")}
        for i in range(1, self.workers + 1):
            # no log server per worker: on one machine the API server reads the task logs' files
            out[f"worker{i}"] = ["celery", "worker", "--celery-hostname", f"worker{i}@%h",
                                 "--concurrency", str(self.concurrency), "--skip-serve-logs"]  # fmt: skip
        return out

    def log_path(self, name: str) -> Path:
        return self.settings.home / "runs" / f"airflow-{name}.log"

    def start(self, wait_s: float = 300.0) -> LocalAirflow:
        """Start every component; return once the scheduler is healthy and every worker is ready."""
        import time

        self.settings.ensure_dirs()
        prepare_airflow(self.settings)
        extra = celery_env(self.settings, self.concurrency) if self.executor == "celery" else {}
        self._extra = extra
        try:
            for name in self.components():
                self._spawn(name)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                for name, proc in self.processes.items():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"airflow {name} stopped (exit {proc.returncode}); see {self.log_path(name)}"
                        )
                if scheduler_healthy() and all(self._worker_ready(n) for n in self.processes if n.startswith("worker")):
                    return self
                time.sleep(2)
            raise RuntimeError(f"Airflow did not become healthy in {wait_s:.0f} s; see {self.log_path('*')}")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str) -> None:
        env = airflow_env(self.settings, {**self._extra, **({WORKER_NAME: name} if name.startswith("worker") else {})})
        path = self.log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            self.processes[name] = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), *self.components()[name]],
                                                    env=env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True, cwd=REPO_ROOT)  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and every process it started (its session), as a node lost or a pod
        OOM-killed: nothing gets to clean up."""
        import psutil

        proc = self.processes[name]
        # its session: the component and everything under it, each task's process group included
        # (Airflow's supervisor starts every task in a group of its own)
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getsid(p.pid) == proc.pid:
                    p.kill()
        proc.wait(timeout=30)

    def restart(self, name: str, wait_s: float = 120.0) -> None:
        """Start ``name`` again (as Kubernetes restarts a pod), and wait until it is ready."""
        import time

        path = self.log_path(name)
        since = path.stat().st_size if path.exists() else 0  # its log before: the last start's "ready."
        self._spawn(name)
        deadline = time.monotonic() + wait_s
        ready = (lambda: self._worker_ready(name, since)) if name.startswith("worker") else scheduler_healthy
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"airflow {name} did not come back in {wait_s:.0f} s; see {self.log_path(name)}")
            time.sleep(1)

    def _worker_ready(self, name: str, since: int = 0) -> bool:
        path = self.log_path(name)
        text = path.read_bytes()[since:].decode(errors="replace") if path.exists() else ""
        return f"{name}@" in text and " ready." in text

    def wait(self) -> int:
        """Until a component stops (its exit code), Ctrl-C or SIGTERM (0)."""
        import signal
        import time

        def interrupt(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)  # a process manager's stop: the same clean stop as Ctrl-C
        try:
            while True:
                for name, proc in self.processes.items():
                    if proc.poll() is not None:
                        print(f"airflow {name} stopped (exit {proc.returncode}); see {self.log_path(name)}", flush=True)
                        return proc.returncode or 1
                time.sleep(1)
        except KeyboardInterrupt:
            return 0

    def stop(self) -> None:
        # workers first: they finish (or give back) their tasks while the scheduler still runs
        for name in sorted(self.processes, key=lambda n: not n.startswith("worker")):
            stop_process(self.processes[name])
        self.processes.clear()


def airflow(args: list[str], settings: Settings, **kwargs) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(cmd, env=airflow_env(settings), check=False, **kwargs)


# the metadata database migrated (created when new) and the warehouse pool set, in one Python
# process: two `airflow` commands cost two start-ups of Airflow (about 8 s before every demo run)
_PREPARE = """
import sys
from airflow.models.pool import Pool
from airflow.utils import db
db.upgradedb()
Pool.create_or_update_pool(name=sys.argv[1], slots=int(sys.argv[2]), description=sys.argv[3], include_deferred=False)
"""


def warehouse_pool_description(settings: Settings) -> str:
    """What the Airflow UI says of the pool ``crm_warehouse``, wherever it is set."""
    return f"the warehouse's tasks ({settings.dbt_target}: {settings.warehouse_pool_slots} slot(s))"


def prepare_airflow(settings: Settings) -> None:
    """Create or migrate the metadata database and set the warehouse pool (idempotent, quiet)."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", _PREPARE, WAREHOUSE_POOL, str(settings.warehouse_pool_slots),
           warehouse_pool_description(settings)]  # fmt: skip
    done = subprocess.run(cmd, env=airflow_env(settings), check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"migrating Airflow's metadata database or setting the pool {WAREHOUSE_POOL} failed:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )


def _failure_cause(log_text: str) -> str:
    """The last exception line of a failed run's log (what a user needs to see first)."""
    lines = [ln for ln in log_text.splitlines() if re.search(r"\b\w+(Error|Exception|Failed|Exceeded|Mismatch)\b:", ln)]
    return lines[-1].strip()[:600] if lines else "see the log"


def failed_tasks(dag_id: str, run_id: str, settings: Settings) -> list[str]:
    """What failed in one run of ``dag_id``, as a data engineer reads it first: each failed task
    (``task[map index]``), the last exception of its last attempt's log, and the log's path."""
    try:
        listed = _listed(["tasks", "states-for-dag-run", dag_id, run_id], settings)
    except RuntimeError:  # the report goes on without the tasks
        listed = []
    out = []
    for ti in listed:
        if ti.get("state") not in ("failed", "upstream_failed"):
            continue
        # the CLI gives a mapped task's index as a string, and "" for an unmapped task beside mapped ones
        task, index = ti["task_id"], int(ti.get("map_index") or -1)
        label = task if index < 0 else f"{task}[{index}]"
        if ti["state"] == "upstream_failed":
            out.append(f"{label}: upstream failed")
            continue
        folder = settings.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task}"
        folder = folder / f"map_index={index}" if index >= 0 else folder
        logs = sorted(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
        out.append(f"{label}: {_log_cause(logs[-1].read_text()) if logs else 'no log'}"
                   f"{f' (log: {logs[-1]})' if logs else ''}")  # fmt: skip
    return out


def _log_cause(text: str) -> str:
    """The exception a task's log ends on: Airflow 3 writes task logs as JSON lines, the exception in
    ``error_detail``; text logs (``airflow dags test``) by :func:`_failure_cause`."""
    for line in reversed(text.splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("error_detail"):
                raised = record["error_detail"][0]  # what the task raised; its causes follow it
                return f"{raised.get('exc_type')}: {raised.get('exc_value')}"[:600]
    return _failure_cause(text)


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


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its children (SIGTERM, then SIGKILL after 60 s)."""
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
    return _listed(["dags", "list-runs", dag_id], settings)


def _listed(command: list[str], settings: Settings) -> list[dict]:
    """What an ``airflow`` listing command prints with ``-o json`` (the last JSON list it prints:
    warnings may come before it)."""
    done = airflow([*command, "-o", "json"], settings, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(command[:2])} failed: {done.stderr[-1000:]}")
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
