"""Business dates run side by side through Airflow, on Celery workers, give, date by date, the rows
each gives alone.

As a data engineer works: ``make demo`` for the live date (yesterday in Lima), then Airflow running
on the CeleryExecutor with two workers (``make airflow EXECUTOR=celery``: the embedded Redis as the
broker) with crm_daily unpaused, so that its scheduler starts the live date's run, and while that
runs ``make backfill`` of three older dates with ``max_active_runs`` 3. Both workers run tasks of
the runs, and the warehouse's tasks (pool ``crm_warehouse``) never overlap, whichever worker runs
them. Every mart's rows of each date are fingerprinted (row count and SHA-256 of the sorted rows;
``dim_customers``: the customer versions valid on the date); two dates are backfilled again, their
runs must execute again (new end times) and their rows must not change; then each date runs alone
in a fresh data directory of its own (its own sandbox, warehouse and Redis; the same champion, from
the backfill's MLflow registry) with ``make demo``, and must give the same fingerprints, every mart
with rows. The live snapshot stays the live date's throughout.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from benchmarks.backfill import differences, fingerprints, served_snapshot
from crm.settings import REPO_ROOT, Settings, yesterday_in_lima

pytestmark = pytest.mark.e2e

CUSTOMERS, SEED = 300, 5
# the live date is the one Airflow's scheduler starts a run for once crm_daily is unpaused
LIVE = yesterday_in_lima()
BACKFILL = [LIVE - dt.timedelta(days=k) for k in (7, 6, 5)]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", *args, "--customers", str(CUSTOMERS), "--seed",
                           str(SEED)], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
                          check=False)  # fmt: skip


def _interval(run: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(run["start_date"]), dt.datetime.fromisoformat(run["end_date"])


def _task_instances(settings: Settings) -> list[tuple]:
    """(run, task, map index, worker, pool, start, end) of every task crm_daily ran."""
    con = sqlite3.connect(settings.airflow_home / "airflow.db")
    try:
        return con.execute(
            "select run_id, task_id, map_index, hostname, pool, start_date, end_date from task_instance "
            "where dag_id = 'crm_daily' and state = 'success' order by start_date"
        ).fetchall()
    finally:
        con.close()


def _backfill_runs(runs: list[dict]) -> dict[str, tuple[str, str]]:
    """Each backfilled date's run: ``{date: (run id, end time)}``."""
    return {r["logical_date"][:10]: (r["run_id"], r["end_date"]) for r in runs if r["run_id"].startswith("backfill__")}


def _backfill_three_dates(env: dict) -> subprocess.CompletedProcess:
    """``make backfill`` of the three dates, three runs at a time, beside whatever Airflow runs."""
    done = _cli(env, "backfill", "--from", str(BACKFILL[0]), "--to", str(BACKFILL[-1]), "--max-active-runs", "3")
    assert done.returncode == 0, done.stdout[-3000:]
    return done


def _settled_runs(settings: Settings) -> list[dict]:
    """crm_daily's runs once none is still going (ten minutes at most): every one a success."""
    from crm.airflow_env import dag_runs

    deadline = time.monotonic() + 600
    while any(r["state"] not in ("success", "failed") for r in dag_runs("crm_daily", settings)):
        assert time.monotonic() < deadline, dag_runs("crm_daily", settings)
        time.sleep(5)
    runs = dag_runs("crm_daily", settings)
    assert all(r["state"] == "success" for r in runs), [(r["run_id"], r["state"]) for r in runs]
    return runs


def alone_in_a_fresh_home(env: dict, home, day: dt.date, champion: str) -> dict:
    """``make demo`` of ``day`` in a data directory of its own with the champion of ``champion``
    (an MLflow tracking URI): nothing another run wrote is there to agree with. Its fingerprints."""
    home.mkdir()
    done = _cli({**env, "CRM_HOME": str(home), "CRM_MLFLOW_TRACKING_URI": champion}, "demo", "--date", str(day))
    assert done.returncode == 0, done.stdout[-3000:]
    # the backfill's champion, not a model trained in the fresh home
    assert "model: crm-campaign-propensity version 1 (alias champion)" in done.stdout, done.stdout[-3000:]
    return fingerprints(Settings(home=home).duckdb_path, [day])


def engine_fingerprints(settings: Settings, days: list[dt.date]) -> dict[str, dict[str, tuple[int, str]]]:
    """Each date's rows of every dated mart, fingerprinted through the warehouse interface: the
    same rows give the same fingerprint on DuckDB and on PostgreSQL (``{day: {mart: (rows, hash)}}``;
    ``dim_customers``: the versions valid on the date, without their end, as :func:`fingerprints`)."""
    from benchmarks.backfill import DATED_MARTS
    from crm.warehouse import fingerprint, warehouse

    out = {}
    with warehouse(settings).connect() as session:
        columns = session.connection.exec_driver_sql("select * from marts.dim_customers where 1 = 0").keys()
        kept = ", ".join(c for c in columns if c not in ("valid_to", "is_current"))
        for day in days:
            marts = {}
            for mart, column in DATED_MARTS.items():
                statement = (
                    f"select {kept} from marts.dim_customers where valid_from <= :d and valid_to > :d"
                    if mart == "dim_customers"
                    else f"select * from marts.{mart} where {column} = :d"
                )
                marts[mart] = fingerprint(session, statement, {"d": day})
            out[str(day)] = marts
    return out


# the DuckDB test's backfilled dates and its champion, for the same dates' run on PostgreSQL
DUCKDB_RUN: dict = {}


def test_dates_run_side_by_side_give_each_date_the_rows_it_gives_alone(crm_home, monkeypatch):
    from crm.airflow_env import LocalAirflow, dag_runs, unpause
    from crm.services import stop_services_started_since

    home = crm_home / "concurrent"
    home.mkdir()
    # the scheduler's own runs (the live date's) size the sandbox from these, as make backfill's do
    for var, value in {"CRM_HOME": str(home), "CRM_SANDBOX_CUSTOMERS": str(CUSTOMERS),
                       "CRM_SANDBOX_SEED": str(SEED), "CRM_TASK_RETRIES": "0"}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    env = dict(os.environ)
    settings = Settings(home=home)

    demo = _cli(env, "demo", "--date", str(LIVE))
    assert demo.returncode == 0, demo.stdout[-3000:]
    live = fingerprints(settings.duckdb_path, [LIVE])

    airflow = LocalAirflow(settings, "celery", workers=2, concurrency=2).start()
    try:
        assert unpause("crm_daily", settings), "crm_daily never reached Airflow's metadata database"

        backfill = _backfill_three_dates(env)
        for day in BACKFILL:
            assert f"  {day}: success " in backfill.stdout, backfill.stdout[-2000:]
        assert f"for {LIVE} (the cache only moves forward)" in backfill.stdout

        runs = _settled_runs(settings)
        side_by_side = fingerprints(settings.duckdb_path, BACKFILL)

        # the backfill ran its dates side by side, and beside the scheduler's run of the live date
        backfilled = [_interval(r) for r in runs if r["run_id"].startswith("backfill__")]
        scheduled = [_interval(r) for r in runs if r["run_id"].startswith("scheduled__")]
        assert len(backfilled) == 3 and len(scheduled) == 1, [r["run_id"] for r in runs]
        (s_start, s_end), first_start = scheduled[0], min(a for a, _ in backfilled)
        assert s_start < max(b for _, b in backfilled) and first_start < s_end, (backfilled, scheduled)
        assert all(a < first_start + dt.timedelta(seconds=60) for a, _ in backfilled), backfilled  # 3 at a time

        # the Celery workers shared the runs' tasks (make demo's ran in airflow dags test); DuckDB's
        # one writer was never two of them
        tasks = [t for t in _task_instances(settings) if t[0].startswith(("backfill__", "scheduled__"))]
        assert {t[3] for t in tasks} == {"worker1", "worker2"}, {t[3] for t in tasks}
        warehouse = sorted((t[5], t[6], t[0], t[1]) for t in tasks if t[4] == "crm_warehouse")
        assert len(warehouse) >= 4 * 8, warehouse  # every run's plan, load, dbt, gate, model, scoring, publish
        for before, after in itertools.pairwise(warehouse):
            assert after[0] >= before[1], (before, after)

        first = _backfill_runs(runs)
        again = _cli(env, "backfill", "--from", str(BACKFILL[1]), "--to", str(BACKFILL[2]))
        assert again.returncode == 0, again.stdout[-3000:]
        rerun = fingerprints(settings.duckdb_path, BACKFILL[1:])
        second = _backfill_runs(dag_runs("crm_daily", settings))
    finally:
        airflow.stop()
        stop_services_started_since(set(), settings)

    # every compared mart has rows on every date: an empty mart would hash the same on both sides
    empty = {str(day): [m for m, (rows, _) in marts.items() if rows == 0] for day, marts in side_by_side.items()}
    assert not any(empty.values()), empty
    # the second backfill executed its dates again (each run ended anew), and changed nothing
    for day in BACKFILL[1:]:
        assert second[str(day)] != first[str(day)] and second[str(day)][1] > first[str(day)][1], (first, second)
    assert second[str(BACKFILL[0])] == first[str(BACKFILL[0])]
    assert differences(rerun, {d: side_by_side[d] for d in BACKFILL[1:]}) == {}
    assert served_snapshot(settings)["business_date"] == str(LIVE)
    # the scheduler's run of the live date, beside the backfill, gave the rows its make demo gave
    assert differences(fingerprints(settings.duckdb_path, [LIVE]), live) == {}

    alone = {}
    for day in BACKFILL:
        alone.update(alone_in_a_fresh_home(env, crm_home / f"alone-{day}", day, settings.mlflow_tracking_uri))
    assert not any(rows == 0 for marts in alone.values() for rows, _ in marts.values()), alone
    assert differences(side_by_side, alone) == {}
    assert served_snapshot(settings)["business_date"] == str(LIVE)
    DUCKDB_RUN.update(marts=engine_fingerprints(settings, BACKFILL), champion=settings.mlflow_tracking_uri)


def test_on_postgresql_dates_side_by_side_share_the_pool_and_give_the_duckdb_rows(crm_home, monkeypatch):
    """The same operation on PostgreSQL (``WAREHOUSE=postgres``, the embedded server): the live
    date's scheduled run and a backfill of three dates, side by side on two Celery workers. The
    pool ``crm_warehouse`` has ``CRM_WAREHOUSE_POOL_SLOTS`` slots there, so warehouse tasks of
    different dates do run at the same time; every run succeeds, and each date's marts equal, by
    content hash, what the DuckDB test's runs gave (same bank, same champion)."""
    from crm.airflow_env import LocalAirflow, unpause
    from crm.services import stop_services_started_since

    assert DUCKDB_RUN, "runs after test_dates_run_side_by_side_give_each_date_the_rows_it_gives_alone (its reference)"
    home = crm_home / "concurrent-postgres"
    home.mkdir()
    for var, value in {"CRM_HOME": str(home), "CRM_SANDBOX_CUSTOMERS": str(CUSTOMERS), "CRM_SANDBOX_SEED": str(SEED),
                       "CRM_TASK_RETRIES": "0", "CRM_DBT_TARGET": "postgres",
                       "CRM_MLFLOW_TRACKING_URI": DUCKDB_RUN["champion"]}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    env = dict(os.environ)
    settings = Settings(home=home)
    assert settings.warehouse_pool_slots == 8

    demo = _cli(env, "demo", "--date", str(LIVE))
    assert demo.returncode == 0, demo.stdout[-3000:]
    assert "(warehouse: postgresql;" in demo.stdout
    airflow = LocalAirflow(settings, "celery", workers=2, concurrency=2).start()
    try:
        assert unpause("crm_daily", settings), "crm_daily never reached Airflow's metadata database"
        _backfill_three_dates(env)
        runs = _settled_runs(settings)
        assert sum(r["run_id"].startswith("backfill__") for r in runs) == 3
        assert any(r["run_id"].startswith("scheduled__") for r in runs), [r["run_id"] for r in runs]
        side_by_side = engine_fingerprints(settings, BACKFILL)
        tasks = [t for t in _task_instances(settings) if t[0].startswith(("backfill__", "scheduled__"))]
    finally:
        airflow.stop()
        stop_services_started_since(set(), settings)

    # warehouse tasks of different dates overlapped: the pool is the server's, not DuckDB's one slot
    warehouse = sorted((t[5], t[6], t[0], t[1]) for t in tasks if t[4] == "crm_warehouse")
    overlapping = [(a, b) for a, b in itertools.combinations(warehouse, 2) if a[2] != b[2] and b[0] < a[1]]
    assert overlapping, warehouse
    empty = {day: [m for m, (rows, _) in marts.items() if rows == 0] for day, marts in side_by_side.items()}
    assert not any(empty.values()), empty
    assert differences(side_by_side, DUCKDB_RUN["marts"]) == {}
