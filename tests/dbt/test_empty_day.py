"""Empty is an answer, not a crash: a business date on which no campaign is live builds its marts
with no eligible pair, and the scoring step stops the run at the assignment gate, naming the
counts and the campaigns' state, before anything is written or published."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from dbt_warehouse import empty_raw_warehouse, run_dbt

from benchmarks.warehouses import land
from crm.settings import get_settings
from crm.warehouse import warehouse
from ml.score import NothingToAssign, assignment_gate, score_and_assign
from sandbox.bank import Bank

AFTER_EVERY_CAMPAIGN = dt.date(2028, 1, 15)  # every campaign of the seeds ends by 2027-12-31


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    directory = tmp_path_factory.mktemp("empty-day")
    with duckdb.connect(str(empty_raw_warehouse(directory))) as con:
        land(con, Bank(200, seed=3), AFTER_EVERY_CAMPAIGN, 30, 30)
    done = run_dbt(directory, "build", "--exclude", "test_type:unit", "tag:after_scoring",
                   business_date=AFTER_EVERY_CAMPAIGN)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    return get_settings().replace(home=directory)


def test_a_day_with_no_eligible_pair_stops_at_the_assignment_gate(settings):
    with pytest.raises(NothingToAssign) as stopped:
        score_and_assign(AFTER_EVERY_CAMPAIGN, settings)
    message = str(stopped.value)
    assert "assignment gate for 2028-01-15: 0 eligible customer x campaign pairs" in message
    assert "no campaign is live on 2028-01-15 (the last one ended 2027-12-31)" in message
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        written = con.execute("select count(*) from marts.customer_campaign_assignments").fetchone()[0]
    assert written == 0


def test_pairs_with_no_offer_assigned_stop_at_the_gate_with_the_outcomes(settings):
    with warehouse(settings).connect() as session:
        with pytest.raises(NothingToAssign, match="120 eligible pairs scored but arbitration assigned no offer"):
            assignment_gate(session, AFTER_EVERY_CAMPAIGN, 120, 0)
        assignment_gate(session, AFTER_EVERY_CAMPAIGN, 120, 7)  # offers assigned: the run goes on
