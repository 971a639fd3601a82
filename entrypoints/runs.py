"""The DAG runs a person starts from the command line (``make demo``, ``make train``): each runs
through Airflow on the embedded services, stops the services it started, and says what it made."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

from crm.airflow_env import (
    LocalAirflow,
    airflow,
    api_server_up,
    dag_runs,
    failed_tasks,
    prepare_airflow,
    run_dag_test,
    scheduler_healthy,
    unpause,
)
from crm.backfills import discard_backfills, open_backfills
from crm.services import running_services, stop_services_started_since
from crm.settings import Settings, get_settings
from crm.warehouse import engine_name, fingerprint, warehouse

# what make demo counts for the day, by mart and the column that holds its date
FINGERPRINT_MAX_ROWS = 500_000  # the demo hashes the marts' rows of the date up to this many in all

DAY_COLUMNS = (
    ("fct_transactions", "booking_date"),
    ("customer_features", "as_of_date"),
    ("campaign_eligibility", "as_of_date"),
    ("customer_campaign_assignments", "business_date"),
    ("campaign_performance", "performance_date"),
    ("customer_360", "as_of_date"),
)


def sandbox_settings(customers: int, seed: int) -> Settings:
    """Settings for a run on a sandbox bank of ``customers`` (the embedded service and the DAG's
    tasks read the size and seed from the environment)."""
    os.environ["CRM_SANDBOX_CUSTOMERS"] = str(customers)
    os.environ["CRM_SANDBOX_SEED"] = str(seed)
    return get_settings()


def run_daily(
    business_date: dt.date, customers: int, seed: int, settings: Settings, force_publish: bool = False
) -> int:
    """Run crm_daily for ``business_date`` through ``airflow dags test``; 0 when it succeeded."""
    conf = {"customers": customers, "seed": seed, "force_publish": force_publish}
    rc = run_dag_test("crm_daily", business_date, conf, settings)
    if rc:
        print("nothing was published to the cache from this run.")
    return rc


def summarize(business_date: dt.date, settings: Settings) -> dict:
    """What the run produced, read back from each stage's output."""

    from ingestion.landing import landed_rows
    from models.core_banking import ENTITIES

    out: dict = {"landing": {}, "quarantine": {}, "raw": {}, "marts": {}}
    for entity in ENTITIES:
        out["landing"][entity] = landed_rows(settings.landing_dir, entity, business_date) or 0
        out["quarantine"][entity] = landed_rows(settings.quarantine_dir, entity, business_date) or 0
    with warehouse(settings).connect() as session:
        for entity in ENTITIES:
            out["raw"][entity] = session.scalar(f"select count(*) from raw.{entity}")
        for table, col in DAY_COLUMNS:
            out["marts"][table] = session.scalar(
                f"select count(*) from marts.{table} where {col} = :d", {"d": business_date}
            )
        # a control customer's offer is logged, never served: "with offers" and the example are served ones
        row = session.rows(
            "select max(model_name), max(model_version), count(distinct customer_id), min(customer_id) "
            "from marts.customer_campaign_assignments where business_date = :d and arm <> 'control'",
            {"d": business_date},
        )[0]
        out["arms"] = dict(session.rows(
            "select arm, count(distinct customer_id) from marts.customer_campaign_assignments "
            "where business_date = :d group by arm order by arm", {"d": business_date}))  # fmt: skip
        # the content hash reads every row into this process: for a demo-sized bank, not a bank's day
        small = sum(out["marts"].values()) <= FINGERPRINT_MAX_ROWS
        out["fingerprints"] = {
            table: fingerprint(session, f"select * from marts.{table} where {col} = :d", {"d": business_date})
            if small
            else (out["marts"][table], None)
            for table, col in DAY_COLUMNS
        }
    out["model"] = {"name": row[0], "version": row[1]}
    out["customers_with_offers"] = row[2]
    out["some_customer"] = int(row[3] or 1)
    return out


def demo(business_date: dt.date, customers: int, seed: int, force_publish: bool = False) -> int:
    """``make demo``: crm_daily through Airflow on the sandbox bank, then what it made and how to look."""
    from serving.auth import ensure_demo_keys
    from serving.publish import live_snapshot_meta

    settings = sandbox_settings(customers, seed)
    before = running_services(settings)
    try:
        rc = run_daily(business_date, customers, seed, settings, force_publish=force_publish)
        if rc:
            return rc
        summary = summarize(business_date, settings)
        meta = live_snapshot_meta(settings)
        keys = ensure_demo_keys(settings)
    finally:
        stopped = stop_services_started_since(before, settings)
    print(f"\ncrm_daily succeeded for business date {business_date} ({customers} sandbox customers, seed {seed})")
    print("rows per stage:")
    for stage in ("landing", "quarantine", "raw", "marts"):
        print(f"  {stage:<11}" + ", ".join(f"{k}={v}" for k, v in summary[stage].items()))
    print(f"customers with offers: {summary['customers_with_offers']}")
    arms = summary["arms"]
    print(f"the day's experiment (customers): model {arms.get('model', 0)}, exploration {arms.get('exploration', 0)} "
          f"(an eligible offer at random), control {arms.get('control', 0)} (offer logged, not served)")  # fmt: skip
    print(f"the marts' rows of the date and their content hash (warehouse: {engine_name(settings)}; the same rows "
          "give the same hash on every engine):")  # fmt: skip
    for table, (rows, digest) in summary["fingerprints"].items():
        print(f"  {table:<30} {rows:>8} rows  {digest or f'(not hashed: over {FINGERPRINT_MAX_ROWS:,} rows in all)'}")
    print(f"model: {summary['model']['name']} version {summary['model']['version']} (alias champion)")
    if meta:
        print(
            f"cache snapshot: {meta['snapshot_id']} ({meta['customers']} customers, {meta['offers']} offers, "
            f"{meta['segments']} segments), fresh until {meta['expires_at']}, served until {meta['served_until']}"
        )
    print(f"demo integration API keys (marketing, sales): {settings.demo_api_keys_path}")
    if stopped:
        saved = " (Redis saved the cache; make serve reloads it)" if "redis" in stopped else ""
        print(f"stopped the services this run started: {', '.join(stopped)}{saved}")
    print(
        "\nhow to look at it:\n"
        "  make serve                                   # the read API on http://127.0.0.1:8000 (docs at /docs)\n"
        f'  curl -H "X-API-Key: {keys["sales"][:14]}..." http://127.0.0.1:8000/v1/customers/{summary["some_customer"]}/offers\n'
        "     (an integration's key; full keys: cat .crm/demo_api_keys.json)\n"
        f'  curl -H "Authorization: Bearer $(.venv/bin/crm token --customer {summary["some_customer"]})" '
        "http://127.0.0.1:8000/v1/me/offers\n"
        "     (the mobile app: a customer's token; also /v1/me/balances and /v1/me/transactions, from the bank)\n"
        "  http://127.0.0.1:8000/console                # the staff console (after make serve): sign in with the token of\n"
        "     .venv/bin/crm token --staff ana.torres --role marketing    (campaigns, segments, CSV, results)\n"
        "     .venv/bin/crm token --staff luis.quispe --role sales       (a customer's offers and profile)\n"
        "  make airflow                                 # the Airflow UI with this run, on http://localhost:8080\n"
        "  make docs                                    # the marts' docs and the data gates' results, on http://127.0.0.1:8081\n"
        "  make evaluate                                # this assignment against the sandbox's truth (oracle, random)\n"
        "  make train                                   # crm_model_training: a new version, champion only if better\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}   # runs, metrics, plots, registry\n"
        "  make sql                                     # query the marts as an analyst (never in a run's way)\n"
        '  make sql SQL="select * from marts.customer_campaign_assignments limit 10"',
        flush=True,
    )
    return 0


def train(business_date: dt.date, customers: int, seed: int, overrides: dict) -> int:
    """``make train``: crm_model_training through Airflow as of ``business_date`` (its params
    ``overrides`` on top), then what it decided."""
    from ml.registry import latest_version

    settings = sandbox_settings(customers, seed)
    conf = {"business_date": business_date.isoformat(), "customers": customers, "seed": seed, **overrides}
    before = running_services(settings)
    try:
        rc = run_dag_test("crm_model_training", business_date + dt.timedelta(days=1), conf, settings)
    finally:
        stop_services_started_since(before, settings)
    if rc:
        return rc
    latest = latest_version(settings)
    print(f"\ncrm_model_training succeeded as of {business_date}: {settings.model.model_name} v{latest.version} "
          f"({latest.tags.get('candidate')}) is {latest.tags.get('promotion.decision')}")  # fmt: skip
    print(f"  {latest.tags.get('promotion.reason')}")
    print(f"runs, metrics and plots: MLflow experiment crm-campaign-propensity in {settings.mlflow_tracking_uri}")
    print(f"  (.venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri})", flush=True)
    return 0


def _runs_of(settings: Settings, first: dt.date, last: dt.date) -> dict[dt.date, dict]:
    """crm_daily's run of each date of ``first``..``last`` that has one."""
    runs = {business_date_of(r["logical_date"]): r for r in dag_runs("crm_daily", settings) if r.get("logical_date")}
    return {d: r for d, r in runs.items() if first <= d <= last}


def _backfill_runs(
    settings: Settings, first: dt.date, last: dt.date, since: dt.datetime, in_flight: set[str] = frozenset()
) -> dict[dt.date, dict]:
    """The runs of crm_daily a backfill created ``since`` runs for ``first``..``last``: the latest
    run of each date that started since (a date that had a run, the scheduler's or a manual one, is
    run again in that run: its id stays, ``backfill__`` is only the prefix of the runs it makes),
    or that was ``in_flight`` when the backfill was created (Airflow's backfill leaves it out)."""
    runs: dict[dt.date, dict] = {}
    for run in sorted(dag_runs("crm_daily", settings), key=lambda r: r.get("start_date") or ""):
        started = run.get("start_date")
        if run["run_id"] not in in_flight and (not started or dt.datetime.fromisoformat(started) < since):
            continue
        day = business_date_of(run["logical_date"])
        if first <= day <= last:
            runs[day] = run
    return runs


def _wait_until_backfills_close(settings: Settings, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while open_backfills("crm_daily", settings):
        if time.monotonic() > deadline:
            return False
        time.sleep(5)
    return True


def business_date_of(logical_date: str) -> dt.date:
    """A crm_daily run's business date from its logical date, as the DAG's ``ds`` is (its UTC date:
    a scheduled run's logical date is midnight in Lima, 05:00 UTC)."""
    return dt.datetime.fromisoformat(logical_date).astimezone(dt.UTC).date()


ANOTHER_BACKFILL = (
    "another backfill of crm_daily is still running (Airflow allows one per DAG): let it finish, "
    "or cancel it in the Airflow UI (make airflow, Browse > Backfills), then run this again"
)


def backfill(first: dt.date, last: dt.date, customers: int, seed: int, max_active_runs: int) -> int:
    """``make backfill``: crm_daily for ``first``..``last`` as an Airflow backfill, on the Airflow of
    ``make airflow`` when it runs (else one started for it), waited for, then each date's outcome."""
    settings = sandbox_settings(customers, seed)
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    before = running_services(settings)
    started = None
    try:
        prepare_airflow(settings)
        if not api_server_up():
            print("starting Airflow (airflow standalone) for the backfill; make airflow would keep it running")
            started = LocalAirflow(settings).start()
        # unpaused once the DAG processor has parsed it: a paused DAG's tasks are not scheduled,
        # backfills' included (Airflow 3.3)
        if not unpause("crm_daily", settings):
            print("crm_daily is not in Airflow's metadata database: is the DAG processor running?")
            return 1
        if not _wait_until_backfills_close(settings):  # one whose runs ended closes within a scheduler loop
            print(ANOTHER_BACKFILL)
            return 1
        # Airflow's backfill leaves out a date whose run is in flight (the scheduler's, say): followed.
        # Looked at before the creation: the runs it creates are queued at once, and are not these
        in_flight = {
            r["run_id"] for r in _runs_of(settings, first, last).values() if r["state"] in ("queued", "running")
        }
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # the backfill's runs start after this
        conf = json.dumps({"customers": customers, "seed": seed, "force_publish": False})
        # the runs' logical dates are midnight in Lima (the DAG's timetable): the window is given so
        window = [dt.datetime.fromisoformat(f"{d}T00:00:00-05:00") for d in (first, last)]
        create = ["backfill", "create", "--dag-id", "crm_daily", "--from-date", window[0].isoformat(),
                  "--to-date", window[1].isoformat(), "--max-active-runs", str(max_active_runs),
                  "--reprocess-behavior", "completed", "--dag-run-conf", conf]  # fmt: skip
        # the DAG is paused while Airflow creates the runs: on SQLite the scheduler picked up the
        # first runs of a 30-day creation, the creation then hit "database is locked" and deleted
        # them, and the scheduler died on the runs gone (Airflow 3.3); paused, it leaves them alone
        airflow(["dags", "pause", "crm_daily"], settings, capture_output=True)
        try:
            for _attempt in range(5):
                created = airflow(create, settings, capture_output=True, text=True)
                if created.returncode == 0 or "database is locked" not in created.stdout + created.stderr:
                    break
                # SQLite refused a writer (a read transaction upgraded while the scheduler wrote).
                # The backfill's row was committed before its runs, and Airflow's clean-up can fail
                # under the same lock: the open backfill left refused every retry as "another
                # backfill" (seen in CI). Ours is discarded first (crm/backfills.py)
                time.sleep(5)
                discard_backfills("crm_daily", since, *window, settings)
        finally:
            unpause("crm_daily", settings)
        if created.returncode != 0:
            output = created.stdout + created.stderr
            if "AlreadyRunningBackfill" in output:
                print(ANOTHER_BACKFILL)
            else:
                print(f"airflow backfill create failed:\n{output[-3000:]}")
            return 1
        if in_flight:
            print(f"already running, followed rather than run again: {', '.join(sorted(in_flight))}")
        print(f"backfill of crm_daily created for {first}..{last} (max_active_runs {max_active_runs}); waiting")
        runs: dict[dt.date, dict] = {}
        unhealthy_since = None
        while True:
            runs = _backfill_runs(settings, first, last, since, in_flight)
            states = {d: runs[d]["state"] for d in runs}
            if len(runs) == len(days) and all(s in ("success", "failed") for s in states.values()):
                break
            print("  " + ", ".join(f"{d}: {states.get(d, 'waiting')}" for d in days), flush=True)
            if scheduler_healthy():
                unhealthy_since = None
            elif (unhealthy_since := unhealthy_since or time.monotonic()) < time.monotonic() - 120:
                print("Airflow's scheduler has not been healthy for 2 minutes: the backfill cannot go on. "
                      "See the scheduler's log, restart Airflow, and run make backfill again (done dates rerun).")  # fmt: skip
                return 1
            time.sleep(15)
        _wait_until_backfills_close(settings)  # the next make backfill may start at once
    finally:
        if started is not None:  # the services the runs started go with the Airflow started for them
            started.stop()
            stop_services_started_since(before, settings)
        # on make airflow's Airflow, other runs (the scheduler's, a triggered one) may still use them
    return _report_backfill(days, runs, settings)


def _report_backfill(days: list[dt.date], runs: dict[dt.date, dict], settings: Settings) -> int:
    from serving.publish import live_snapshot_meta

    print("\nbackfill of crm_daily:")
    for day in days:
        made = summarize(day, settings)
        print(f"  {day}: {runs[day]['state']:<8} eligible pairs {made['marts']['campaign_eligibility']}, "
              f"assignment {made['marts']['customer_campaign_assignments']} offers to "
              f"{made['customers_with_offers']} customers")  # fmt: skip
        if runs[day]["state"] == "failed":
            for failure in failed_tasks("crm_daily", runs[day]["run_id"], settings):
                print(f"      {failure}")
    before = running_services(settings)
    try:
        meta = live_snapshot_meta(settings)
    finally:
        stop_services_started_since(before, settings)
    if meta:
        print(f"live snapshot: {meta['snapshot_id']} for {meta['business_date']} (the cache only moves forward)")
    return 0 if all(runs[d]["state"] == "success" for d in days) else 1
