"""crm_retention through Airflow (``airflow dags test``): clear personal data older than the retention
window leaves raw, landing and quarantine; the marts keep their history, unchanged."""

from __future__ import annotations

import datetime as dt

import duckdb
from dbt_warehouse import empty_raw_warehouse, run_dbt

from benchmarks.backfill import fingerprints
from benchmarks.warehouses import land
from crm.airflow_env import run_dag_test
from sandbox.bank import Bank

D = dt.date(2026, 11, 27)
OLD = D - dt.timedelta(days=40)  # past the 35-day window
RECENT = D - dt.timedelta(days=10)
BUILD = ("build", "--exclude", "test_type:unit", "tag:after_scoring")
BUILT = ("customer_features", "campaign_eligibility", "campaign_exclusions", "fct_transactions",
         "fct_campaign_contacts", "dim_customers")  # the marts BUILD makes (no scoring here)  # fmt: skip


def _partition(root, entity: str, day: dt.date):
    path = root / entity / f"business_date={day}" / "data.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1")  # the purge removes partitions whole, whatever they hold
    return path.parent


def test_retention_removes_old_clear_personal_data_and_keeps_the_marts_history(settings, tmp_path):
    s = settings.replace(home=tmp_path)
    empty_raw_warehouse(tmp_path)
    bank = Bank(200, seed=3)
    for day in (OLD, RECENT):
        with duckdb.connect(str(s.duckdb_path)) as con:
            land(con, bank, day, 30, 30)
        done = run_dbt(tmp_path, *BUILD, business_date=day)
        assert done.returncode == 0, done.stdout[-3000:]
    marts_before = fingerprints(s.duckdb_path, [OLD, RECENT], BUILT)
    with duckdb.connect(str(s.duckdb_path), read_only=True) as con:
        before = dict(con.execute("select _business_date, count(*) from raw.customers group by 1").fetchall())
    old_landing = _partition(s.landing_dir, "customers", OLD)
    kept = [_partition(s.landing_dir, "customers", RECENT), _partition(s.landing_dir, "transactions", OLD),
            _partition(s.quarantine_dir, "customers", RECENT)]  # fmt: skip
    old_quarantine = [_partition(s.quarantine_dir, "accounts", OLD), _partition(s.quarantine_dir, "customers", OLD)]

    assert run_dag_test("crm_retention", D, {}, s) == 0
    log = (tmp_path / "runs" / f"crm_retention_{D}.log").read_text()
    assert f"'raw_customer_rows': {before[OLD]}" in log and "'landing_partitions': 1" in log
    assert "'quarantine_partitions': 2" in log

    with duckdb.connect(str(s.duckdb_path), read_only=True) as con:
        days = dict(con.execute("select _business_date, count(*) from raw.customers group by 1").fetchall())
    assert days == {RECENT: before[RECENT]}
    assert not old_landing.exists() and not any(p.exists() for p in old_quarantine)
    assert all(p.exists() for p in kept)
    assert fingerprints(s.duckdb_path, [OLD, RECENT], BUILT) == marts_before  # the marts' history is whole
    assert marts_before[OLD]["customer_features"][0] > 0 and before[OLD] > 0
