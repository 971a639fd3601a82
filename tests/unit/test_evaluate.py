"""The evaluation against the sandbox's oracle (``ml.evaluate.compare``), on the sandbox bank's own
true propensities: the oracle assigns by the arbitration's objective (probability x value x
weight) under the same rules, so the assignment a perfect model would make captures exactly all of
it, and one that ranks by probability alone captures less of the value while winning acceptances."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.arbitrate import Policy, arbitrate
from ml.evaluate import PAIR_COLUMNS, compare
from models.core_banking import CHANNELS
from sandbox.oracle import Oracle

D = dt.date(2026, 11, 27)
CUSTOMERS = 2000


@pytest.fixture(scope="module")
def case():
    oracle = Oracle(CUSTOMERS, seed=5)
    campaigns = oracle.bank.campaign_ids[:4]
    rng = np.random.default_rng(3)
    ids = np.arange(1, CUSTOMERS + 1)
    pairs = pd.DataFrame(
        [(c, k) for c in ids for k in campaigns if rng.random() < 0.6], columns=["customer_id", "campaign_id"]
    )
    # offers of very different worth: a loan is worth more than a card, whatever their odds
    worth = dict(zip(campaigns, (50.0, 400.0, 120.0, 900.0), strict=True))
    pairs["value_pen"] = pairs["campaign_id"].map(worth)
    pairs["priority_weight"] = pairs["campaign_id"].map(dict(zip(campaigns, (1.5, 0.5, 1.0, 0.8), strict=True)))
    for column in PAIR_COLUMNS:
        if column not in pairs:
            pairs[column] = 1 if column.startswith("consent_") else 0
    # what the channels can carry today is the scarce thing: 300 offers for 4,800 eligible pairs
    policy = Policy(max_offers=1, channel_capacity=dict.fromkeys(CHANNELS, 60))
    truth = pairs.copy()
    truth["true_p"] = 0.0
    for campaign, rows in truth.groupby("campaign_id").groups.items():
        truth.loc[rows, "true_p"] = oracle.true_propensity(truth.loc[rows, "customer_id"].to_numpy(), campaign)
    return oracle, policy, pairs, truth


def test_a_perfect_model_captures_all_of_the_oracles_value(case):
    oracle, policy, pairs, truth = case
    perfect = arbitrate(truth.assign(propensity=truth["true_p"]), policy)
    result = compare(pairs, perfect, oracle, policy, D, seed=1)
    assert result.oracle_capture == 1.0 and result.ours_value == result.oracle_value
    assert result.random_capture < 0.8  # chance is far from it


def test_ranking_by_probability_alone_loses_value_and_is_told_so(case):
    oracle, policy, pairs, truth = case
    by_odds = arbitrate(truth.assign(propensity=truth["true_p"], value_pen=1.0, priority_weight=1.0), policy)
    result = compare(pairs, by_odds, oracle, policy, D, seed=1)
    assert result.oracle_capture < 0.9  # the scarce contacts went to likely but cheap offers
    assert result.acceptance_capture > 1.0  # it does win more acceptances than the value-optimal assignment
    assigned = truth.merge(by_odds[["customer_id", "campaign_id"]])
    assert result.ours == pytest.approx(assigned["true_p"].sum(), abs=0.01)
    # the value is the arbitration's objective: probability x offer value x campaign weight
    objective = assigned["true_p"] * assigned["value_pen"] * assigned["priority_weight"]
    assert result.ours_value == pytest.approx(objective.sum(), abs=0.01)
