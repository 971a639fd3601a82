"""The promotion gate (issue 24, point 2): a version is measured where the capacities pick (the top of
each campaign), and one that loses capture there is never promoted, whatever its ROC AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ml.gate import Capacity, calibration_error, capture_metrics
from ml.registry import CHALLENGER, CHAMPION
from ml.train import chosen_at_random, contact_weights, holdout_metrics, promotion

CAPACITIES = {"CMP-A": Capacity(share=0.05, worth=600 * 400.0), "CMP-B": Capacity(share=0.2, worth=200 * 100.0)}


def _holdout(n: int = 16_000, seed: int = 3):
    """Contacts of two campaigns whose acceptance rises with a latent score, and two rankings: one
    right at the top and wrong below it, one right below the top and wrong at it."""
    rng = np.random.default_rng(seed)
    campaigns = pd.Series(np.where(np.arange(n) % 2 == 0, "CMP-A", "CMP-B"))
    latent = rng.random(n)
    y = (rng.random(n) < np.where(latent > 0.95, 0.8, 0.02 + 0.4 * latent)).astype(int)
    noise = rng.normal(0, 0.01, n)
    top_right = np.where(latent > 0.95, latent, 0.95 - latent) + noise  # the top is right, the rest reversed
    bottom_right = np.where(latent > 0.95, 0.0, latent) + noise  # everything right but the top
    return y, campaigns, np.clip(top_right, 0.001, 0.999), np.clip(bottom_right, 0.001, 0.999)


def test_capture_at_capacity_sees_the_top_that_roc_auc_does_not():
    y, campaigns, top_right, bottom_right = _holdout()
    assert roc_auc_score(y, bottom_right) > roc_auc_score(y, top_right)  # AUC prefers the wrong model
    good = capture_metrics(y, top_right, campaigns, CAPACITIES)
    bad = capture_metrics(y, bottom_right, campaigns, CAPACITIES)
    assert good["capture_at_capacity"] > 0.6 > 0.45 > bad["capture_at_capacity"]
    assert good["precision_at_capacity.CMP-A"] > 1.5 * bad["precision_at_capacity.CMP-A"]
    perfect = capture_metrics(y, y + 0.0, campaigns, CAPACITIES)
    assert perfect["capture_at_capacity"] == 1.0
    assert 0.1 < good["capture_random"] < 0.35  # a random ranking: the campaigns' acceptance rates


def test_a_campaign_without_holdout_contacts_or_not_live_is_left_out():
    y, campaigns, top_right, _ = _holdout()
    only_a = capture_metrics(y, top_right, campaigns, {"CMP-A": CAPACITIES["CMP-A"], "CMP-Z": CAPACITIES["CMP-B"]})
    assert "precision_at_capacity.CMP-B" not in only_a and "precision_at_capacity.CMP-Z" not in only_a
    assert (
        only_a["capture_at_capacity"]
        == capture_metrics(y, top_right, campaigns, {"CMP-A": CAPACITIES["CMP-A"]})["capture_at_capacity"]
    )


def test_calibration_error_is_zero_for_true_rates_and_grows_when_scaled():
    rng = np.random.default_rng(0)
    p = rng.random(200_000) * 0.3
    y = (rng.random(len(p)) < p).astype(int)
    assert calibration_error(y, p) < 0.005
    assert calibration_error(y, p * 2) > 0.1


def test_a_version_that_loses_capture_is_challenger_even_with_a_better_roc_auc():
    y, campaigns, top_right, bottom_right = _holdout()
    champion_metrics = holdout_metrics(y, top_right, campaigns, CAPACITIES)
    newcomer = holdout_metrics(y, bottom_right, campaigns, CAPACITIES)
    assert newcomer["roc_auc"] > champion_metrics["roc_auc"]
    alias, reason = promotion("2", "gradient_boosting", newcomer, ("1", champion_metrics, ""), 0.005)
    assert alias == CHALLENGER and "does not beat champion v1 by the margin 0.005" in reason
    as_well_calibrated = {**champion_metrics, "calibration_error": newcomer["calibration_error"]}
    alias, reason = promotion("2", "per_campaign_logistic", as_well_calibrated, ("1", newcomer, ""), 0.005)
    assert alias == CHAMPION and "beats champion v1" in reason


def test_a_better_capture_badly_calibrated_is_challenger():
    y, campaigns, top_right, bottom_right = _holdout()
    champion_metrics = holdout_metrics(y, bottom_right, campaigns, CAPACITIES)
    overconfident = holdout_metrics(
        y, np.sqrt(top_right), campaigns, CAPACITIES
    )  # same ranking, probabilities too high
    assert overconfident["capture_at_capacity"] > champion_metrics["capture_at_capacity"]
    alias, reason = promotion("2", "logistic_regression", overconfident, ("1", champion_metrics, ""), 0.005)
    assert alias == CHALLENGER and "worse calibrated" in reason
    alias, reason = promotion(
        "1", "logistic_regression", overconfident, (None, None, "there is no champion yet"), 0.005
    )
    assert alias == CHAMPION and reason.startswith("there is no champion yet")


def test_the_gate_reads_only_the_contacts_no_model_chose():
    """The model arm's contacts are the champion's own top picks: capture is measured on the bank's
    random campaigns' and the exploration arm's contacts; the ranking measures on all."""
    y, campaigns, top_right, _ = _holdout()
    arms = pd.DataFrame({"arm": np.array(["model", None, "exploration"], dtype=object)[np.arange(len(y)) % 3]})
    random = chosen_at_random(arms)
    assert random.sum() == len(y) - (np.arange(len(y)) % 3 == 0).sum()
    gate = holdout_metrics(y, top_right, campaigns, CAPACITIES, random)
    alone = capture_metrics(y[random], top_right[random], campaigns[random], CAPACITIES)
    assert gate["capture_at_capacity"] == alone["capture_at_capacity"] and gate["gate_contacts"] == random.sum()
    assert gate["roc_auc"] == holdout_metrics(y, top_right, campaigns, CAPACITIES)["roc_auc"]


def test_a_campaign_top_of_a_few_dozen_contacts_is_read_over_min_top():
    """At a bank's capacities a campaign's top share of its held-out contacts is a few dozen: a ranking
    lucky on those alone must not beat one that is right over the wider top."""
    rng = np.random.default_rng(5)
    n = 8000
    latent = rng.random(n)
    y = (rng.random(n) < 0.03 + 0.6 * latent**8).astype(int)
    campaigns = pd.Series(["CMP-A"] * n)
    tiny = {"CMP-A": Capacity(share=0.005, worth=1.0)}  # a top of 40 contacts
    right = latent + rng.normal(0, 0.02, n)
    lucky = rng.random(n)
    lucky[np.flatnonzero(y)[:40]] += 1.0  # exactly 40 acceptances first, random after
    assert (
        capture_metrics(y, right, campaigns, tiny)["capture_at_capacity"]
        > capture_metrics(y, lucky, campaigns, tiny)["capture_at_capacity"]
    )


def test_the_gate_measures_contacts_with_their_training_weights():
    """An exploration contact drawn among k offers stands for k eligible pairs (decision 0028). A model
    fitted on the weighted contacts predicts the rate of the pairs they stand for: the gate must find
    it calibrated, not off by the gap between the logged contacts and those pairs."""
    rng = np.random.default_rng(11)
    n = 60_000
    offers = rng.choice([1, 8], n, p=[0.8, 0.2])  # customers with 8 eligible offers are drawn 1/8 as often
    y = (rng.random(n) < np.where(offers == 8, 0.10, 0.02)).astype(int)
    contacts = pd.DataFrame({"arm": "exploration", "selection_probability": 1.0 / offers})
    weights = contact_weights(contacts)
    stands_for = float((weights * np.where(offers == 8, 0.10, 0.02)).sum() / weights.sum())  # 0.073
    p = np.clip(stands_for + rng.normal(0, 0.002, n), 0.001, 0.999)
    campaigns = pd.Series(["CMP-A"] * n)
    weighted = holdout_metrics(y, p, campaigns, CAPACITIES, chosen_at_random(contacts), weights)
    assert weighted["calibration_error"] < 0.01
    assert holdout_metrics(y, p, campaigns, CAPACITIES)["calibration_error"] > 0.03  # the logged contacts' rate: 0.036
    # weights of 1 measure exactly what no weights do
    ones = capture_metrics(y, p, campaigns, CAPACITIES, np.ones(n))
    assert ones == capture_metrics(y, p, campaigns, CAPACITIES)


def test_precision_at_capacity_counts_each_contact_for_the_pairs_it_stands_for():
    """Two contacts ranked first, one drawn among 8 offers: the top share of the campaign's eligible
    pairs is mostly what that one stands for, so its outcome weighs 8 times the other's."""
    p = np.linspace(0.9, 0.01, 1000)
    y = np.zeros(1000, dtype=int)
    y[0] = 1  # the first-ranked contact accepted, the second refused
    w = np.ones(1000)
    w[0] = 8.0
    campaigns = pd.Series(["CMP-A"] * 1000)
    one = {"CMP-A": Capacity(share=0.002, worth=1.0)}
    m = capture_metrics(y, p, campaigns, one, w)
    # the top is read over a quarter of the contacts: 250 of the mean weight 1.007, so the first 245
    # contacts (8 + 244 of weight); unweighted it would be 1 acceptance in 250
    assert m["precision_at_capacity.CMP-A"] == round(8 / 252, 6)
