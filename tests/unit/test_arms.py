"""The day's experiment (issue 24, point 4): customers split into the model's arm, an exploration arm
and a held-out control by a hash of id and date; the control's row is the offer it would have had;
exploration draws one eligible offer at random, within its share of the capacities, and logs the
probability it was drawn with."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.arbitrate import Policy, arbitrate
from ml.arms import CONTROL, EXPLORATION, MODEL, Shares, arm_of, assign, split_policy

D = dt.date(2026, 11, 27)
CAMPAIGNS = ["CMP-A", "CMP-B", "CMP-C", "CMP-D"]


def _pairs(customers: int, seed: int = 1) -> pd.DataFrame:
    """Each customer eligible for 1 to 4 campaigns, with a propensity."""
    rng = np.random.default_rng(seed)
    eligible = rng.random((customers, len(CAMPAIGNS))) < 0.6
    eligible[:, 0] |= ~eligible.any(axis=1)
    row, col = np.nonzero(eligible)
    return pd.DataFrame(
        {
            "customer_id": row.astype(np.int64) + 1,
            "campaign_id": pd.Categorical(np.array(CAMPAIGNS)[col], categories=CAMPAIGNS),
            "propensity": rng.random(len(row)) * 0.3,
            "value_pen": 100.0,
            "priority_weight": 1.0,
        }
    )


def test_the_split_follows_the_shares_and_is_a_function_of_customer_and_date():
    ids = np.arange(1, 200_001)
    shares = Shares(exploration=0.05, control=0.1)
    arms = arm_of(ids, D, shares)
    share = {a: float((arms == a).mean()) for a in (MODEL, EXPLORATION, CONTROL)}
    assert share[CONTROL] == pytest.approx(0.1, abs=0.005) and share[EXPLORATION] == pytest.approx(0.05, abs=0.005)
    assert (arm_of(ids, D, shares) == arms).all()  # a rerun of the date: the same arms
    tomorrow = arm_of(ids, D + dt.timedelta(days=1), shares)
    assert 0.1 < (tomorrow != arms).mean() < 0.4  # a customer's arm changes from day to day
    both = (arms == CONTROL) & (tomorrow == CONTROL)
    assert both.mean() == pytest.approx(0.01, abs=0.003)  # independent draws: 10% x 10%
    with pytest.raises(ValueError, match="shares"):
        Shares(exploration=0.6, control=0.5)


def test_the_control_row_is_the_offer_it_would_have_had_and_is_the_only_difference():
    pairs = _pairs(20_000)
    policy = Policy(max_offers=2, campaign_capacity={c: 1500 for c in CAMPAIGNS})
    shares = Shares(exploration=0.05, control=0.05)
    out = assign(pairs, policy, D, shares)
    arms = arm_of(pairs["customer_id"].to_numpy(), D, shares)
    model_policy, _ = split_policy(policy, shares.exploration)
    plan = arbitrate(pairs[arms != EXPLORATION], model_policy)  # the model's plan, control customers included
    mine = out[out["arm"] != EXPLORATION].reset_index(drop=True)
    assert (
        mine[["customer_id", "campaign_id", "rank"]]
        .astype(str)
        .equals(plan[["customer_id", "campaign_id", "rank"]].astype(str))
    )
    control = mine[mine["arm"] == CONTROL]
    assert 0.03 < control["customer_id"].nunique() / mine["customer_id"].nunique() < 0.07
    assert (mine["selection_probability"] == 1.0).all()
    served = out[out["arm"] != CONTROL].groupby("campaign_id", observed=True).size()
    assert (served <= 1500).all()


def test_exploration_draws_an_eligible_offer_uniformly_and_logs_its_probability():
    pairs = _pairs(40_000, seed=2)
    shares = Shares(exploration=0.3, control=0.0)
    unlimited = assign(pairs, Policy(max_offers=3), D, shares)
    explored = unlimited[unlimited["arm"] == EXPLORATION]
    eligible = pairs.groupby("customer_id").size()
    assert explored["customer_id"].is_unique  # one offer each
    assert set(zip(explored["customer_id"], explored["campaign_id"].astype(str), strict=True)) <= set(
        zip(pairs["customer_id"], pairs["campaign_id"].astype(str), strict=True)
    )
    # no capacity binds: the probability is 1 / the customer's eligible offers
    expected = 1 / eligible.loc[explored["customer_id"]].to_numpy()
    assert np.allclose(explored["selection_probability"], expected)
    # uniform: among customers eligible for all four, each campaign drawn about a quarter of the time
    four = explored[eligible.loc[explored["customer_id"]].to_numpy() == 4]["campaign_id"].astype(str)
    assert (four.value_counts(normalize=True) - 0.25).abs().max() < 0.04
    # the exploration arm's share of a capacity that binds: served in a random order, probability scaled
    capped = assign(pairs, Policy(max_offers=3, campaign_capacity={"CMP-A": 1000}), D, shares)
    capped_a = capped[(capped["arm"] == EXPLORATION) & (capped["campaign_id"].astype(str) == "CMP-A")]
    assert len(capped_a) == 300  # 30% of the campaign's capacity
    drawn_a = (explored["campaign_id"].astype(str) == "CMP-A").sum()
    ratio = capped_a["selection_probability"].to_numpy() * eligible.loc[capped_a["customer_id"]].to_numpy()
    assert np.allclose(ratio, 300 / drawn_a)
    assert (capped[capped["arm"] == MODEL]["campaign_id"].astype(str) == "CMP-A").sum() == 700
