"""``make bench-backfill``: a 30-day backfill of crm_daily through Airflow (``make backfill``, three
dates at a time), beside the same dates run one at a time, compared mart by mart and date by date.

On the sandbox bank of ``make demo`` (``CUSTOMERS``, ``SEED``), in a data directory of its own under
``<CRM_HOME>/bench/backfill``: ``make demo`` for the live date (yesterday in Lima, or ``DATE``), then
``make backfill`` of the 30 days before it under a running Airflow (its scheduler also starts the
live date's scheduled run beside the backfill), then each of those dates alone, in a fresh data
directory of its own (its own sandbox, warehouse and Redis; the backfill's champion, from its
MLflow registry) with ``make demo``. Every mart's rows of each date are fingerprinted (row count
and SHA-256 of the sorted rows; ``dim_customers``: the versions valid on the date) after the
backfill and in the date's own directory; the bench prints the dates whose fingerprints differ,
the marts without rows (none is the target for either: an empty mart hashes the same on both
sides) and the alone runs that failed (a difference: a failed run has nothing to compare), the
wall time of both, and what ``/v1/snapshot`` serves at the end (the live date: a backfill never
moves the cache back). Exit 1 when a target is missed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

# every mart's rows that belong to one business date: the mart and the column holding the date
# (dim_customers: the versions valid on the date, see date_rows)
DATED_MARTS = {
    "customer_features": "as_of_date",
    "campaign_eligibility": "as_of_date",
    "campaign_exclusions": "as_of_date",
    "customer_campaign_assignments": "business_date",
    "customer_360": "as_of_date",
    "campaign_performance": "performance_date",
    "fct_transactions": "booking_date",
    "fct_campaign_contacts": "contact_date",
    "dim_customers": "valid_from",
}


def content_hash(con, table: str, where: str = "true", params: list | None = None) -> tuple[int, str]:
    """(rows, SHA-256 of the rows in a set order) of ``table`` where ``where``: equal when the two
    relations hold the same rows, whatever order they were written in."""
    rows = con.execute(f"select * from {table} where {where}", params or []).fetchall()
    digest = hashlib.sha256()
    for row in sorted(map(repr, rows)):
        digest.update(row.encode())
    return len(rows), digest.hexdigest()


def date_rows(mart: str, day: dt.date) -> tuple[str, str, list]:
    """(relation, condition, parameters) selecting ``mart``'s rows of ``day``. For ``dim_customers``,
    the customer versions valid on the date, without their end (``valid_to``, ``is_current``): a
    warehouse that has also loaded later dates knows when they ended, one that ran the date alone
    does not, and the profile each customer had that day is the same."""
    if mart == "dim_customers":
        valid = (
            "select * exclude (valid_to, is_current) from marts.dim_customers where valid_from <= ? and valid_to > ?"
        )
        return f"({valid})", "true", [day, day]
    return f"marts.{mart}", f"{DATED_MARTS[mart]} = ?", [day]


def fingerprints(
    duckdb_path: Path, days: list[dt.date], marts: tuple[str, ...] = tuple(DATED_MARTS)
) -> dict[dt.date, dict[str, tuple[int, str]]]:
    """Each date's fingerprint of every mart (or of ``marts``): ``{day: {mart: (rows, sha256)}}``."""
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        return {day: {m: content_hash(con, *date_rows(m, day)) for m in marts} for day in days}


def differences(a: dict, b: dict) -> dict[str, list[str]]:
    """The marts whose fingerprints differ between ``a`` and ``b``, by date (empty when equal)."""
    out = {}
    for day in sorted(set(a) | set(b)):
        marts = sorted(m for m in DATED_MARTS if a.get(day, {}).get(m) != b.get(day, {}).get(m))
        if marts:
            out[str(day)] = marts
    return out


def served_snapshot(settings) -> dict:
    """What ``GET /v1/snapshot`` serves (the read API on the data directory's cache, a marketing key)."""
    import json

    from fastapi.testclient import TestClient

    from crm.services import ensure_redis, running_services, stop_services_started_since
    from serving.api import create_app

    keys = json.loads(settings.demo_api_keys_path.read_text())
    before = running_services(settings)
    try:
        with TestClient(create_app(ensure_redis(settings), settings)) as client:
            return client.get("/v1/snapshot", headers={"X-API-Key": keys["marketing"]}).json()["snapshot"]
    finally:
        stop_services_started_since(before, settings)


def run_crm(*args: str, env: dict | None = None) -> tuple[int, float]:
    """``crm <args>`` as a user types it (output to this terminal); its exit code and seconds."""
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "entrypoints.cli", *args], env=env)
    return code, round(time.perf_counter() - start, 1)


SHARED_PLACES = ("CRM_DUCKDB_PATH", "CRM_MLFLOW_TRACKING_URI", "CRM_MLFLOW_ARTIFACT_ROOT", "CRM_REDIS_URL",
                 "CRM_CORE_API_URL")  # fmt: skip


def fresh_bench_home(
    name: str, customers: int, seed: int, bench_home: Path | None = None
) -> tuple[Path, Path, tuple[str, ...]]:
    """(the bench results' home, ``<CRM_HOME>/bench/<name>`` emptied, the ``crm`` options of the bank):
    the environment names the home and the bank, for every command the bench runs and the runs an
    Airflow scheduler starts on its own. ``bench_home``: the results' home when the environment
    already names a bench's own (a bench's second bank)."""
    import os
    import shutil

    from crm.settings import get_settings

    bench_home = bench_home or get_settings().home
    home = bench_home / "bench" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ.update({"CRM_HOME": str(home), "CRM_SANDBOX_CUSTOMERS": str(customers), "CRM_SANDBOX_SEED": str(seed)})
    # everything in the bench's home: a warehouse, registry or service named elsewhere would be shared
    # with the developer's own, or between a bench's two banks
    for name in SHARED_PLACES:
        os.environ.pop(name, None)
    return bench_home, home, ("--customers", str(customers), "--seed", str(seed))


def empty_marts(prints: dict) -> dict[str, list[str]]:
    """The marts without a row, by date (an empty mart would hash the same on both sides)."""
    out = {str(day): sorted(m for m, (rows, _) in marts.items() if rows == 0) for day, marts in prints.items()}
    return {day: marts for day, marts in out.items() if marts}


def main() -> int:
    import argparse
    import os
    import shutil
    import time

    from benchmarks.report import report
    from crm.airflow_env import LocalAirflow, api_server_up, dag_runs, unpause
    from crm.services import stop_services_started_since
    from crm.settings import Settings, yesterday_in_lima

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-active-runs", type=int, default=3)
    args = parser.parse_args()
    if api_server_up():
        print("an Airflow API server already answers on :8080 (make airflow?): stop it first, the bench starts its own")
        return 1

    bench_home, home, bank = fresh_bench_home("backfill", args.customers, args.seed)
    settings = Settings(home=home)
    live = yesterday_in_lima()  # the date Airflow's scheduler runs once crm_daily is unpaused
    days = [live - dt.timedelta(days=k) for k in range(args.days, 0, -1)]

    code, demo_s = run_crm("demo", "--date", str(live), *bank)
    if code:
        return code
    standalone = LocalAirflow(settings).start()
    try:
        if not unpause("crm_daily", settings):
            print("crm_daily never reached Airflow's metadata database")
            return 1
        code, backfill_s = run_crm("backfill", "--from", str(days[0]), "--to", str(days[-1]), *bank,
                                "--max-active-runs", str(args.max_active_runs))  # fmt: skip
        if code:
            print("make backfill failed: nothing to compare")
            return code
        while any(r["state"] not in ("success", "failed") for r in dag_runs("crm_daily", settings)):
            time.sleep(5)  # the scheduler's run of the live date
        runs = dag_runs("crm_daily", settings)
    finally:
        standalone.stop()
        stop_services_started_since(set(), settings)
    backfilled = fingerprints(settings.duckdb_path, days)
    served = served_snapshot(settings)

    # each date alone in a fresh data directory, with the backfill's champion: nothing another run
    # wrote is there to agree with. A failed run is a difference (its date gets no fingerprint)
    alone, alone_s, alone_failed = {}, 0.0, []
    for day in days:
        fresh = home / "alone" / str(day)
        fresh.mkdir(parents=True)
        env = {**os.environ, "CRM_HOME": str(fresh), "CRM_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}
        code, seconds = run_crm("demo", "--date", str(day), *bank, env=env)
        alone_s += seconds
        if code:
            print(f"{day} alone failed (exit {code}): counted as a difference")
            alone_failed.append(str(day))
            continue
        alone.update(fingerprints(Settings(home=fresh).duckdb_path, [day]))
        shutil.rmtree(fresh)  # its own sandbox, warehouse and cache: a few hundred MB a date
    differing = differences(backfilled, alone)
    empty = {**empty_marts(backfilled), **{f"{d} alone": m for d, m in empty_marts(alone).items()}}

    figures = {
        "customers": args.customers,
        "dates": len(days),
        "marts_per_date": len(DATED_MARTS),
        "max_active_runs": args.max_active_runs,
        "runs_failed": sum(r["state"] != "success" for r in runs),
        "backfill_s": backfill_s,
        # each alone run starts from an empty home (a history load, a fresh Airflow database), the
        # backfill's runs from the live date's warehouse: a cost beside it, not a speed-up ratio
        "alone_in_fresh_homes_s": round(alone_s, 1),
        "live_demo_s": demo_s,
        "dates_differing": len(differing),
        "alone_failed": len(alone_failed),
        "dates_with_an_empty_mart": len({d.split()[0] for d in empty}),
        "served_business_date": served["business_date"],
        "served_is_newest": int(served["business_date"] == str(live)),
    }
    code = report("backfill", figures, at_most={"dates_differing": 0, "runs_failed": 0, "alone_failed": 0,
                  "dates_with_an_empty_mart": 0}, at_least={"served_is_newest": 1}, home=bench_home)  # fmt: skip
    for day, marts in differing.items():
        print(f"  {day}: differs from the date run alone in {', '.join(marts)}")
    for day, marts in empty.items():
        print(f"  {day}: no rows in {', '.join(marts)}")
    fingerprint = hashlib.sha256(repr(sorted(backfilled.items())).encode()).hexdigest()[:16]
    print(f"  fingerprint of all {len(days)} dates x {len(DATED_MARTS)} marts: backfill {fingerprint}, alone "
          f"{hashlib.sha256(repr(sorted(alone.items())).encode()).hexdigest()[:16]}")  # fmt: skip
    return code


if __name__ == "__main__":
    raise SystemExit(main())
