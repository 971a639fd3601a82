"""Faults production meets, survived: crm_daily on Airflow's CeleryExecutor (two workers, as ``make
airflow EXECUTOR=celery`` runs it) loses a worker in the middle of an extraction slice, the cache's
Redis in the middle of ``publish_cache``, and its scheduler in the middle of a backfill. Each time
the run completes on Airflow's own retries, with the rows a run without the fault gives (every
mart's fingerprint: row count and SHA-256 of the sorted rows), and a reader of the cache never finds
the live snapshot half-published.

The broker is a Redis of its own here, as in a deployment (the chart's), so that killing the cache's
leaves Celery standing. Every request to the sandbox bank takes a second (its ``slow`` fault), so an
extraction slice is still running when its worker is killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.backfill import differences, fingerprints
from crm.settings import REPO_ROOT, Settings, yesterday_in_lima

pytestmark = pytest.mark.e2e

CUSTOMERS, SEED = 300, 9
LIVE = yesterday_in_lima()  # the date the scheduler runs once crm_daily is unpaused
D0, D1, D2 = (LIVE - dt.timedelta(days=k) for k in (3, 2, 1))  # the demo's; the backfill's two
FAULTY = {
    "CRM_TASK_RETRIES": "2",
    "CRM_TASK_RETRY_DELAY_S": "5",
    # a task whose worker is gone is failed (and retried) after 20 s without a heartbeat, not 5 minutes
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # a scheduler started again takes over the tasks its predecessor queued within 30 s, not 5 minutes
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "CRM_SANDBOX_FAULTS": "slow=1,slow_s=1",
}


def _cli(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", *args, "--customers", str(CUSTOMERS), "--seed",
                           str(SEED)], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
                          check=False, **kwargs)  # fmt: skip


def _now() -> str:
    """The time as Airflow's metadata database on SQLite writes it (UTC)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _task_instances(settings: Settings, task_id: str, since: str = "") -> list[tuple]:
    """(run, map index, try, state, worker) of crm_daily's ``task_id`` (the tries started since
    ``since``, when given: a backfill of a date that has a run reuses that run), the latest last."""
    con = sqlite3.connect(settings.airflow_home / "airflow.db", timeout=60)
    try:
        return con.execute(
            "select run_id, map_index, try_number, state, hostname from task_instance "
            "where dag_id = 'crm_daily' and task_id = ? and coalesce(start_date, '9') >= ? order by start_date",
            (task_id, since),
        ).fetchall()
    finally:
        con.close()


def _tries(settings: Settings, task_id: str, day: dt.date) -> int:
    """How many times ``task_id`` ran in the run for ``day`` (a cleared or retried task, once more each)."""
    con = sqlite3.connect(settings.airflow_home / "airflow.db", timeout=60)
    try:
        return con.execute(
            "select coalesce(max(ti.try_number), 0) from task_instance ti join dag_run r on r.run_id = ti.run_id "
            "and r.dag_id = ti.dag_id where ti.dag_id = 'crm_daily' and ti.task_id = ? and r.logical_date like ?",
            (task_id, f"{day}%"),
        ).fetchone()[0]
    finally:
        con.close()


def _wait_for(probe, what: str, timeout: float = 300.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while (value := probe()) in (None, False, [], ()):
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(interval)
    return value


def _runs(settings: Settings) -> dict[str, dict]:
    from crm.airflow_env import dag_runs

    return {r["run_id"]: r for r in dag_runs("crm_daily", settings)}


@pytest.fixture(scope="module")
def faulty(crm_home):
    """``make demo`` of D0 (a champion, a live snapshot), then Airflow on Celery with two workers and
    the faults' settings; yields (settings, environment, Airflow, each date's rows as the faults left them)."""
    from crm.airflow_env import LocalAirflow
    from crm.services import ensure_redis, stop_redis, stop_services_started_since

    home = crm_home / "faults"
    home.mkdir()
    base = {**os.environ, "CRM_HOME": str(home), "CRM_SANDBOX_CUSTOMERS": str(CUSTOMERS), "CRM_SANDBOX_SEED": str(SEED)}
    demo = _cli(base, "demo", "--date", str(D0))
    assert demo.returncode == 0, demo.stdout[-3000:]
    broker, settings = Settings(home=home / "broker"), Settings(home=home)
    airflow = None
    try:
        sock = ensure_redis(broker).removeprefix("unix://")
        env = {**base, **FAULTY, "AIRFLOW__CELERY__BROKER_URL": f"redis+socket://{sock}?virtual_host=1",
               "AIRFLOW__CELERY__RESULT_BACKEND": f"redis+socket://{sock}?virtual_host=2"}  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                if os.environ.get(name) != value:
                    mp.setenv(name, value)
            airflow = LocalAirflow(settings, "celery", workers=2, concurrency=2).start()
            yield settings, env, airflow, {}
    finally:
        if airflow is not None:
            airflow.stop()
        stop_services_started_since(set(), settings)
        stop_redis(broker)


def test_a_worker_killed_mid_extraction_slice_is_retried_to_the_same_rows(faulty):
    """The scheduler's run of the live date: a Celery worker is SIGKILLed (node lost) while it
    extracts; the scheduler finds the task without a heartbeat, Airflow retries it on a worker, the
    extraction resumes, and the run succeeds."""
    from crm.airflow_env import unpause

    settings, _, airflow, rows = faulty
    assert unpause("crm_daily", settings), "crm_daily never reached Airflow's metadata database"
    running = _wait_for(
        lambda: [t for t in _task_instances(settings, "extract") if t[3] == "running" and t[4]],
        "an extraction slice running on a worker",
    )
    run_id, map_index, _, _, worker = running[0]
    time.sleep(1.5)  # into its pages (each request to the bank takes a second)
    airflow.kill(worker)
    airflow.restart(worker)  # as Kubernetes restarts the pod

    run = _wait_for(lambda: (r := _runs(settings).get(run_id)) and r["state"] in ("success", "failed") and r,
                    "the run to end", timeout=600, interval=3)  # fmt: skip
    assert run["state"] == "success", run
    tries = [t for t in _task_instances(settings, "extract") if t[0] == run_id and t[1] == map_index]
    assert max(t[2] for t in tries) >= 2, tries  # it failed on the lost worker and succeeded on a retry
    rows.update(fingerprints(settings.duckdb_path, [LIVE]))


def test_redis_killed_mid_publish_is_retried_and_readers_never_see_half_a_snapshot(faulty):
    """The live date rerun (``make backfill``): the cache's Redis is SIGKILLed while
    ``publish_cache`` is writing the new snapshot (its writes held by ``CLIENT PAUSE``, so the kill
    lands in the middle); the retry, on a Redis started again, publishes the date whole. A reader
    polling the cache throughout finds the live snapshot whole each time it can read it."""
    import redis

    from crm.services import embedded_redis_url
    from serving.keys import Keys

    settings, env, _, rows = faulty
    keys, url = Keys(settings.serving.redis_prefix), embedded_redis_url(settings)
    seen: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with (
                contextlib.suppress(redis.RedisError, OSError),
                redis.Redis.from_url(url, socket_timeout=2, client_name="crm-test-reader") as r,
            ):
                while not stop.is_set():
                    sid = (r.get(keys.current) or b"").decode()
                    if sid:
                        meta = json.loads(r.get(keys.meta(sid)) or "{}")
                        found = sum(r.hlen(k) for k in r.scan_iter(f"{settings.serving.redis_prefix}:snap:{sid}:cb:*"))
                        seen.append((sid, meta.get("customers", -1), found))
                    time.sleep(0.1)
            time.sleep(0.2)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    since, before = _now(), _tries(settings, "publish_cache", LIVE)
    backfill = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "backfill", "--from", str(LIVE), "--to",
                                 str(LIVE), "--customers", str(CUSTOMERS), "--seed", str(SEED)], env=env,
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        _wait_for(lambda: [t for t in _task_instances(settings, "dbt_reporting", since) if t[3] in ("running", "success")],
                  "the backfill's reporting marts", timeout=600)  # fmt: skip
        control = redis.Redis.from_url(url, client_name="crm-test-control")
        control.execute_command("CLIENT", "PAUSE", "600000", "WRITE")
        _wait_for(lambda: [t for t in _task_instances(settings, "publish_cache", since) if t[3] == "running"],
                  "publish_cache running")  # fmt: skip
        # the task's own connection to the cache: its writes wait on the pause
        _wait_for(lambda: [c for c in control.client_list() if not c["name"].startswith("crm-test")],
                  "publish_cache connected to the cache")  # fmt: skip
        time.sleep(2)
        os.kill(int((settings.run_dir / "redis.pid").read_text()), signal.SIGKILL)
        output, _ = backfill.communicate(timeout=900)
    finally:
        stop.set()
        if backfill.poll() is None:
            backfill.kill()
        with contextlib.suppress(redis.RedisError, OSError):  # a test stopped before the kill
            redis.Redis.from_url(url, socket_timeout=2).execute_command("CLIENT", "UNPAUSE")
    reader.join(timeout=10)
    assert backfill.returncode == 0 and f"  {LIVE}: success " in output, output[-3000:]
    # the backfill's try was killed with Redis, and a retry published (a backfill reruns a date's run)
    assert _tries(settings, "publish_cache", LIVE) >= before + 2, (before, _tries(settings, "publish_cache", LIVE))
    half = [s for s in seen if s[1] != s[2]]
    assert seen and not half, half[:5]
    assert seen[-1][0].startswith(LIVE.strftime("%Y%m%d")), seen[-1]  # the date is live, whole
    assert differences(fingerprints(settings.duckdb_path, [LIVE]), {LIVE: rows[LIVE]}) == {}


def test_the_scheduler_restarted_mid_backfill_and_every_date_gives_its_rows(faulty):
    """``make backfill`` of two dates; the scheduler is SIGKILLed while their tasks run and started
    again: the backfill goes on and ends with both dates a success. Then the four dates run again
    without a fault, and each gives the rows it gave under the faults."""
    settings, env, airflow, rows = faulty
    since = _now()
    backfill = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "backfill", "--from", str(D1), "--to",
                                 str(D2), "--max-active-runs", "2", "--customers", str(CUSTOMERS), "--seed",
                                 str(SEED)], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        _wait_for(lambda: [t for t in _task_instances(settings, "load_raw", since) if t[3] in ("running", "success")],
                  "the backfill under way", timeout=600)  # fmt: skip
        airflow.kill("scheduler")
        time.sleep(5)
        airflow.restart("scheduler")
        output, _ = backfill.communicate(timeout=900)
    finally:
        if backfill.poll() is None:
            backfill.kill()
    assert backfill.returncode == 0, output[-3000:]
    for day in (D1, D2):
        assert f"  {day}: success " in output, output[-3000:]
    rows.update(fingerprints(settings.duckdb_path, [D1, D2]))

    again = _cli(env, "backfill", "--from", str(D1), "--to", str(LIVE))
    assert again.returncode == 0, again.stdout[-3000:]
    clean = fingerprints(settings.duckdb_path, [D1, D2, LIVE])
    assert not any(n == 0 for marts in clean.values() for n, _ in marts.values()), clean
    assert differences(clean, {d: rows[d] for d in (D1, D2, LIVE)}) == {}
