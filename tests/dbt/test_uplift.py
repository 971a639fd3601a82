"""What each campaign added (issue 24, point 5), checked against the sandbox's truth over simulated
days: lists with a model arm and a control are handed to the sandbox bank, its feed is loaded as
the extraction loads it, dbt builds campaign_performance, and its incremental acceptances, summed
over the days, land near the true uplift of the contacted customers, inside their interval."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from dbt_warehouse import empty_raw_warehouse, run_dbt

from sandbox.bank import Bank
from sandbox.executions import Executions
from sandbox.responses import MAX_RESPONSE_DELAY_DAYS

FIRST = dt.date(2026, 10, 1)
DAYS = 12
CUSTOMERS = 60_000
CAMPAIGNS = {"CMP-PL-PREAPP": "SMS", "CMP-CC-NEW": "EMAIL", "CMP-INS-LIFE": "PUSH"}
LIST_SIZE = 6000  # members per campaign and day
CONTROL_SHARE = 0.3


def _list(day: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """A day's list: per campaign, members drawn from the bank, some in the control."""
    parts = []
    for rank, (campaign, channel) in enumerate(CAMPAIGNS.items(), start=1):
        ids = rng.choice(np.arange(1, CUSTOMERS + 1), LIST_SIZE, replace=False)
        arm = np.where(rng.random(LIST_SIZE) < CONTROL_SHARE, "control", "model")
        parts.append(pd.DataFrame({"customer_id": ids, "campaign_id": campaign, "channel": channel, "arm": arm,
                                   "rank": rank}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """``DAYS`` business dates of lists handed to the bank; the feed of their contacts, final."""
    directory = tmp_path_factory.mktemp("uplift")
    bank = Bank(CUSTOMERS, seed=21, executions=Executions(directory / "executions"))
    rng = np.random.default_rng(4)
    last = FIRST + dt.timedelta(days=DAYS)  # the day the last list is worked
    as_of = last + dt.timedelta(days=MAX_RESPONSE_DELAY_DAYS)  # every response arrived
    truth: dict[str, float] = dict.fromkeys(CAMPAIGNS, 0.0)
    with duckdb.connect(str(empty_raw_warehouse(directory))) as con:
        for k in range(DAYS):
            business_date = FIRST + dt.timedelta(days=k)
            members = _list(business_date, rng)
            bank.executions.save(business_date, members.assign(contact=members["arm"] != "control"))
            assignments = members.assign(
                business_date=business_date, offer_id="OFR", propensity=0.1, priority=1.0,
                valid_until=dt.date(2027, 12, 31), model_name="m", model_version="1", reasons="[]",
                selection_probability=1.0,
            )  # fmt: skip
            con.register("assigned", assignments)
            con.execute("insert into marts.customer_campaign_assignments by name select * from assigned")
            day = business_date + dt.timedelta(days=1)
            feed = pd.DataFrame(bank.campaign_responses(np.arange(1, CUSTOMERS + 1), day, as_of=as_of))
            feed["_business_date"] = as_of
            con.register("feed", feed)
            con.execute("insert into raw.campaign_responses by name select * from feed")
            for campaign in CAMPAIGNS:
                treated = members[(members["campaign_id"] == campaign) & (members["arm"] == "model")]
                truth[campaign] += float(bank.true_uplift(treated["customer_id"].to_numpy(), campaign).sum())
    done = run_dbt(directory, "build", "--select", "+campaign_performance", "--indirect-selection", "cautious",
                   "--exclude", "test_type:unit",
                   business_date=as_of)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
        performance = con.execute(
            "select campaign_id, sum(treated) as treated, sum(treated_accepted) as treated_accepted, "
            "sum(control) as control, sum(control_accepted) as control_accepted, "
            "sum(incremental_acceptances) as daily_sum, count(incremental_acceptances) as estimates, "
            "count(*) filter (where incremental_low > incremental_high) as upside_down "
            "from marts.campaign_performance group by campaign_id"
        ).df()
    return performance.set_index("campaign_id"), truth


def test_the_arms_are_counted_as_the_lists_held_them(simulated):
    performance, _ = simulated
    for campaign in CAMPAIGNS:
        row = performance.loc[campaign]
        assert row["treated"] + row["control"] == DAYS * LIST_SIZE  # every member, contacted or tracked
        assert 0.25 < row["control"] / (DAYS * LIST_SIZE) < 0.35
        assert row["estimates"] == DAYS and row["upside_down"] == 0  # one estimate a day, low <= high


def test_incremental_acceptances_match_the_true_uplift_within_their_interval(simulated):
    performance, truth = simulated
    for campaign in CAMPAIGNS:
        row = performance.loc[campaign]
        treated, treated_acc, control, control_acc = (row[k] for k in ("treated", "treated_accepted", "control",
                                                                        "control_accepted"))  # fmt: skip
        daily_sum = row["daily_sum"]
        pt, pc = treated_acc / treated, control_acc / control
        estimate = treated * (pt - pc)
        half = 1.96 * treated * math.sqrt(pt * (1 - pt) / treated + pc * (1 - pc) / control)
        assert truth[campaign] > 0
        assert abs(estimate - truth[campaign]) < half, (campaign, estimate, truth[campaign], half)
        assert abs(estimate - truth[campaign]) < 0.2 * truth[campaign], (campaign, estimate, truth[campaign])
        # the day by day estimates add up to about the whole period's
        assert daily_sum == pytest.approx(estimate, rel=0.1)
