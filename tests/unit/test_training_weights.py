"""Learning from its own choices (issue 24, point 6): a contact weighs the inverse of the probability
its offer was drawn with, so the exploration arm's few random offers stand for the many offers the
model did not make, and the loop does not learn only from its own past picks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.features import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from ml.train import MAX_WEIGHT, contact_weights, estimator, fit_calibrated


def _contacts(rng: np.random.Generator) -> pd.DataFrame:
    """A campaign's contacts: 3,000 of the model's list, accepted at 40 %, and 300 of the exploration
    arm, each drawn as one of ten eligible offers (probability 0.1), accepted at 5 %. Nothing in the
    features tells them apart: what a model learns of the campaign's rate is how it weighs them."""
    n_model, n_explore = 3000, 300
    n = n_model + n_explore
    frame = pd.DataFrame({c: np.zeros(n) for c in NUMERIC_FEATURES})
    frame["age"] = rng.integers(20, 70, n).astype(float)
    for c in CATEGORICAL_FEATURES:
        frame[c] = "CMP-A" if c == "campaign_id" else "X"
    frame["income_band"] = "B3"
    frame["arm"] = ["model"] * n_model + ["exploration"] * n_explore
    frame["selection_probability"] = [1.0] * n_model + [0.1] * n_explore
    frame["accepted"] = np.r_[rng.random(n_model) < 0.40, rng.random(n_explore) < 0.05].astype(int)
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.mark.parametrize("candidate", ["per_campaign_logistic", "gradient_boosting", "logistic_regression"])
def test_an_exploration_contact_stands_for_the_offers_it_was_drawn_among(candidate):
    contacts = _contacts(np.random.default_rng(2))
    model, _ = fit_calibrated(candidate, contacts, weighted=True)
    unseen = _contacts(np.random.default_rng(9))[FEATURES]
    w = contact_weights(contacts)
    weighted_rate = float((w * contacts["accepted"]).sum() / w.sum())  # about (1200 + 10 x 15) / 6000
    unweighted_rate = float(contacts["accepted"].mean())  # about 0.37
    predicted = model.predict_proba(unseen)[:, 1].mean()
    assert abs(predicted - weighted_rate) < 0.03 < abs(predicted - unweighted_rate)
    # and the estimator under the calibration learned it, not only the calibration's sigmoid
    inner = model.calibrated_classifiers_[0].estimator.predict_proba(unseen)[:, 1].mean()
    assert abs(inner - weighted_rate) < 0.03


@pytest.mark.parametrize("candidate", ["per_campaign_logistic", "gradient_boosting", "logistic_regression"])
def test_the_estimator_itself_learns_from_the_weights_not_only_its_calibration(candidate):
    """The calibration's sigmoid alone could move the level: the estimator under it gets the weights."""
    contacts = _contacts(np.random.default_rng(3))
    w = contact_weights(contacts)
    model = estimator(candidate).fit(contacts[FEATURES], contacts["accepted"], sample_weight=w)
    weighted_rate = float((w * contacts["accepted"]).sum() / w.sum())
    unseen = _contacts(np.random.default_rng(9))[FEATURES]
    assert abs(model.predict_proba(unseen)[:, 1].mean() - weighted_rate) < 0.03


def test_weights_are_inverse_probabilities_capped_and_one_without_a_draw():
    contacts = pd.DataFrame({"selection_probability": [1.0, 0.25, None, 0.001]})
    assert contact_weights(contacts).tolist() == [1.0, 4.0, 1.0, MAX_WEIGHT]
    assert contact_weights(pd.DataFrame({"x": [1, 2]})).tolist() == [1.0, 1.0]  # a window before the arms


@pytest.mark.parametrize("candidate", ["per_campaign_logistic", "gradient_boosting", "logistic_regression"])
def test_a_calibrated_candidate_is_right_from_the_least_to_the_most_likely(candidate):
    """Rates from 2 % to 60 % along age: each tenth of the predictions is within a point and a half of
    its acceptance rate. A sigmoid fitted on probabilities instead of log-odds is 3 points off at the
    ends (``PerCampaign`` had no ``decision_function``)."""
    from ml.gate import calibration_error

    def contacts(seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        frame = _contacts(rng).drop(columns=["arm", "selection_probability"])
        frame = pd.concat([frame] * 4, ignore_index=True)
        frame["age"] = rng.integers(20, 70, len(frame)).astype(float)
        rate = 1 / (1 + np.exp(-(frame["age"].to_numpy() - 58) / 5.0))  # 0.01 at 20, 0.92 at 70
        frame["accepted"] = (rng.random(len(frame)) < rate).astype(int)
        return frame

    model, _ = fit_calibrated(candidate, contacts(4), weighted=True)
    unseen = contacts(5)
    p = model.predict_proba(unseen[FEATURES])[:, 1]
    assert calibration_error(unseen["accepted"].to_numpy(), p) < 0.015


def test_a_per_campaign_model_registered_before_it_had_log_odds_scores_as_it_was_calibrated():
    """A champion registered by an older release had its sigmoid fitted on probabilities: loaded by
    this one, its calibration must keep reading probabilities, or its every score changes."""
    contacts = _contacts(np.random.default_rng(2))
    model, _ = fit_calibrated("per_campaign_logistic", contacts, weighted=True)
    import skops.io

    def reloaded(m):
        return skops.io.loads(skops.io.dumps(m), trusted=skops.io.get_untrusted_types(data=skops.io.dumps(m)))

    unseen = _contacts(np.random.default_rng(9))[FEATURES]
    assert hasattr(reloaded(model).calibrated_classifiers_[0].estimator, "decision_function")  # this release's
    assert np.allclose(reloaded(model).predict_proba(unseen), model.predict_proba(unseen))
    del model.calibrated_classifiers_[0].estimator.log_odds_  # as an older release fitted it
    model = reloaded(model)
    inner = model.calibrated_classifiers_[0].estimator
    assert not hasattr(inner, "decision_function")
    calibrator = model.calibrated_classifiers_[0].calibrators[0]
    on_probabilities = calibrator.predict(inner.predict_proba(unseen)[:, 1])
    assert np.allclose(model.predict_proba(unseen)[:, 1], on_probabilities)


def test_the_weights_are_a_training_parameter_off_by_default():
    """Decision 0030: weighing cost capture in the closed loop; the DAG's ``weight_contacts`` turns it on."""
    from entrypoints.tasks import training_config

    assert training_config({}).weight_contacts is False
    assert training_config({"weight_contacts": True}).weight_contacts is True
    contacts = _contacts(np.random.default_rng(2))
    unweighted_rate = float(contacts["accepted"].mean())
    model, _ = fit_calibrated("per_campaign_logistic", contacts)  # the default: every contact counts once
    unseen = _contacts(np.random.default_rng(9))[FEATURES]
    assert abs(model.predict_proba(unseen)[:, 1].mean() - unweighted_rate) < 0.03
