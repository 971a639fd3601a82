"""Each business date is computed alone: what dbt builds for a date does not depend on which date
another run built last. Under Airflow, runs of different dates interleave their dbt tasks (each
model is its own task, queued on the one-slot warehouse pool), so a run for D1 may build its marts
right after a run for D2 rebuilt the relations below them; the marts of D1 must be the same rows as
when D1 is built alone (docs/decisions/0009)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from dbt_warehouse import content_hash, empty_raw_warehouse, run_dbt

from benchmarks.backfill import date_rows
from benchmarks.warehouses import land
from sandbox.bank import Bank

D1 = dt.date(2026, 11, 20)
D2 = dt.date(2026, 11, 27)
BUILD = ("build", "--exclude", "test_type:unit", "tag:after_scoring")  # seeds, snapshot, models, data tests
MARTS = {  # mart: the column that holds the date a run writes
    "customer_features": "as_of_date",
    "campaign_eligibility": "as_of_date",
    "campaign_exclusions": "as_of_date",
    "fct_transactions": "booking_date",
    "fct_campaign_contacts": "contact_date",
}


def _warehouse(directory: Path) -> Path:
    """Raw tables of a 400-customer sandbox bank loaded for D1 (its 180 days of transactions and
    365 of contacts) and for D2 (the days after D1)."""
    bank = Bank(400, seed=7)
    with duckdb.connect(str(empty_raw_warehouse(directory))) as con:
        land(con, bank, D1, 180, 365)
        land(con, bank, D2, (D2 - D1).days, (D2 - D1).days)
    return directory


def _dbt(directory: Path, business_date: dt.date, *args: str) -> None:
    done = run_dbt(directory, *args, business_date=business_date)
    assert done.returncode == 0, done.stdout[-3000:]


def _hashes(directory: Path, business_date: dt.date) -> dict[str, tuple[int, str]]:
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
        return {m: content_hash(con, f"marts.{m}", f"{col} = ?", [business_date]) for m, col in MARTS.items()}


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """D1's marts when D1 is the only date built."""
    directory = _warehouse(tmp_path_factory.mktemp("alone"))
    _dbt(directory, D1, *BUILD)
    return _hashes(directory, D1)


def test_a_date_built_alone_has_rows_in_every_mart(alone):
    assert all(rows > 0 for rows, _ in alone.values()), alone


def test_a_date_built_after_another_dates_staging_gets_its_own_rows(alone, tmp_path):
    """D2 builds everything, then D1's marts are built on what D2 left below them (as when D1's
    mart tasks follow D2's staging tasks in the pool): D1's rows are the same as built alone."""
    directory = _warehouse(tmp_path)
    _dbt(directory, D1, *BUILD)
    _dbt(directory, D2, *BUILD)
    _dbt(directory, D1, "run", "--select", "marts", "--exclude", "tag:after_scoring")
    assert _hashes(directory, D1) == alone


def test_a_backfill_of_an_older_date_brings_the_history_its_load_reaches(tmp_path_factory):
    """The newer date is built first (its transactions and contacts start later); then the older date
    is loaded, as the loader does (its windows replace those days), and built: the transactions and
    contacts up to the older date are the same rows as when it is built alone, the days before the
    newer run's first day included (customer_360's last contact reads them)."""
    bank = Bank(400, seed=7)
    newer = empty_raw_warehouse(tmp_path_factory.mktemp("newer-first")).parent
    alone = empty_raw_warehouse(tmp_path_factory.mktemp("older-alone")).parent
    with duckdb.connect(str(newer / "warehouse.duckdb")) as con:
        land(con, bank, D2, 180, 365)
    _dbt(newer, D2, *BUILD)
    with duckdb.connect(str(newer / "warehouse.duckdb")) as con:  # the older date's load replaces its windows
        con.execute("delete from raw.transactions where booking_date > ? and booking_date <= ?",
                    [D1 - dt.timedelta(days=180), D1])  # fmt: skip
        con.execute("delete from raw.campaign_responses where contact_date > ? and contact_date <= ?",
                    [D1 - dt.timedelta(days=365), D1])  # fmt: skip
        land(con, bank, D1, 180, 365)
    _dbt(newer, D1, *BUILD)
    with duckdb.connect(str(alone / "warehouse.duckdb")) as con:
        land(con, bank, D1, 180, 365)
    _dbt(alone, D1, *BUILD)
    for table, col in (("fct_transactions", "booking_date"), ("fct_campaign_contacts", "contact_date")):
        hashes = []
        for directory in (newer, alone):
            with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
                hashes.append(content_hash(con, f"marts.{table}", f"{col} <= ?", [D1]))
        assert hashes[0] == hashes[1], table
        assert hashes[0][0] > 0
    # the customers' profiles as of the older date: the versions its load brought, behind the
    # newer ones already held (dim_customers, as the concurrent-dates test compares it)
    profiles = []
    for directory in (newer, alone):
        with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
            profiles.append(content_hash(con, *date_rows("dim_customers", D1)))
            if directory == newer:  # customers whose profile changed between the two dates: the case at stake
                assert con.execute("select count(*) from marts.dim_customers where valid_from > ?", [D1]).fetchone()[0]
            else:  # every customer the bank had on the older date, one version each
                customers = con.execute("select count(*) from raw.customers where _business_date = ?", [D1]).fetchone()
    assert profiles[0] == profiles[1]
    assert profiles[0][0] == customers[0] > 0
