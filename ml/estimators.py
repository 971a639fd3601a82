"""The per-campaign logistic candidate: one logistic regression per campaign, on features that
recover what drives a customer's propensity, with a pooled one for a campaign it has too few
outcomes of.

Why (issue 24): the arbitration's capacities pick the top 0.1-1% of each campaign's eligible
pairs, so what counts is the ranking inside each campaign. One pooled model with the campaign as a
feature learns one set of slopes for every product; here each campaign has its own. And the
features are those from which the traits behind a propensity are recovered: the average salary
deposit (the salary itself, where the 90- and 180-day sums mix it with how often it comes), the
main savings account's balance (the total mixes in how many products a customer holds), the
activity, the card, the digital consents, and the age band of young families.

Then (:func:`customer_traits`, decision 0027): the declared income band of a customer we see no
salary deposit of (a fifth of them, whose income the model otherwise did not know), the digital
consents by age (a consent says more of a young customer than of an old one), and age as a smooth
curve (a spline) rather than a line: life stages come and go with age. ``make bench-scoring``'s
oracle capture 0.918 -> 0.934 with ``ml.train``'s cross-validated calibration (decision 0027).

And (:func:`customer_traits_v2`, decision 0031): money moving through a second account (a card pays
before the core lists it), and the savings balance with a slope of its own where no salary deposit is seen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.metaestimators import available_if

from models.core_banking import INCOME_BANDS

# what the candidate reads of ml.features.FEATURES, and what it derives from them
# (and income_band: customer_traits)
INPUTS = ["age", "salary_count_180d", "salary_180d_pen", "balance_savings_pen", "tx_count_90d", "has_credit_card",
          "consent_push", "consent_social"]  # fmt: skip
DERIVED = ["age", "young_family_age", "has_salary", "log_average_salary", "log_savings_balance", "tx_count_90d",
           "has_credit_card", "consent_push", "consent_social"]  # fmt: skip
MIN_OUTCOMES = 30  # acceptances and refusals a campaign needs for a model of its own
AGE_KNOTS = 10  # of the age spline: fewer draw a line through the life stages, more chase noise
CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # the regularisations tried, each chosen by 3-fold log loss


def derived_features(X: pd.DataFrame) -> pd.DataFrame:
    """The candidate's features from the feature store's columns (missing values as none: 0).

    Models registered before :func:`customer_traits` existed read exactly these columns: do not change
    them (a pickled pipeline calls this function by name when it is loaded)."""
    X = X[INPUTS].apply(pd.to_numeric, errors="coerce").astype("float64").fillna(0.0)
    deposits = X["salary_count_180d"].to_numpy()
    salary = np.maximum(X["salary_180d_pen"].to_numpy(), 0.0)
    age = X["age"].to_numpy()
    return pd.DataFrame(
        {
            "age": age,
            "young_family_age": ((age > 26) & (age < 42)).astype("float64"),
            "has_salary": (deposits > 0).astype("float64"),
            "log_average_salary": np.where(deposits > 0, np.log1p(salary / np.maximum(deposits, 1.0)), 0.0),
            "log_savings_balance": np.log1p(np.maximum(X["balance_savings_pen"].to_numpy(), 0.0)),
            "tx_count_90d": X["tx_count_90d"].to_numpy(),
            "has_credit_card": X["has_credit_card"].to_numpy(),
            "consent_push": X["consent_push"].to_numpy(),
            "consent_social": X["consent_social"].to_numpy(),
        },
        index=X.index,
    )


def customer_traits(X: pd.DataFrame) -> pd.DataFrame:
    """:func:`derived_features`, and what else recovers a trait: the declared income band of a customer
    with no salary deposit seen (``no_salary_<band>``, the lowest band the reference), and each digital
    consent times age."""
    d = derived_features(X)
    no_salary = 1.0 - d["has_salary"].to_numpy()
    band = X["income_band"].astype("string").fillna("").to_numpy() if "income_band" in X else np.full(len(X), "")
    for b in INCOME_BANDS[1:]:
        d[f"no_salary_{b}"] = no_salary * (band == b)
    for consent in ("consent_push", "consent_social"):
        d[f"age_x_{consent}"] = d["age"] * d[consent]
    return d


def customer_traits_v2(X: pd.DataFrame) -> pd.DataFrame:
    """:func:`customer_traits`, and two more that recover a trait (decision 0031):

    - money moving through two accounts or more in 180 days (``two_accounts_in_use``): a card
      pays in shops from its own account, months before the core lists that account for the
      customer (``has_credit_card`` says only the listed cards);
    - the savings balance of a customer with no salary deposit seen (``no_salary_x_savings_balance``):
      where the salary does not say the income, the balances speak for it.

    :func:`customer_traits` stays as it was: models registered before call it by name."""
    d = customer_traits(X)
    moved = X["accounts_transacted_180d"] if "accounts_transacted_180d" in X else pd.Series(0.0, index=X.index)
    d["two_accounts_in_use"] = (pd.to_numeric(moved, errors="coerce").fillna(0.0).to_numpy() >= 2).astype("float64")
    d["no_salary_x_savings_balance"] = (1.0 - d["has_salary"].to_numpy()) * d["log_savings_balance"].to_numpy()
    return d


def logistic():
    """:func:`customer_traits_v2`, age as a cubic spline, standardised, into a logistic regression whose
    regularisation the data choose (by cross-validated log loss): a campaign with a few hundred
    contacts needs much of it (the demo bank), one with tens of thousands little."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

    age = SplineTransformer(n_knots=AGE_KNOTS, degree=3, knots="uniform")
    return Pipeline(
        [
            ("features", FunctionTransformer(customer_traits_v2)),
            ("age_curve", ColumnTransformer([("age", age, ["age"])], remainder="passthrough")),
            ("scale", StandardScaler()),
            (
                "model",
                LogisticRegressionCV(
                    Cs=list(CS),
                    l1_ratios=(0.0,),
                    cv=3,
                    scoring="neg_log_loss",
                    max_iter=5000,
                    use_legacy_attributes=False,
                ),
            ),
        ]
    )


class PerCampaign(ClassifierMixin, BaseEstimator):
    """``base`` fitted once per campaign (the ``campaign_id`` column) with at least
    ``min_outcomes`` acceptances and refusals, and once on every row: the pooled model scores a
    campaign it has no model of (a new one, or too few outcomes)."""

    def __init__(self, base=None, min_outcomes: int = MIN_OUTCOMES):
        self.base = base
        self.min_outcomes = min_outcomes

    def fit(self, X: pd.DataFrame, y, sample_weight=None) -> PerCampaign:
        y = np.asarray(y)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype="float64")
        self.classes_ = np.array([0, 1])
        self.log_odds_ = True  # see decision_function
        self.pooled_ = clone(self.base).fit(X, y, **weighted(w))
        self.campaigns_ = {}
        for campaign, rows in X.groupby("campaign_id").indices.items():
            accepted = int(y[rows].sum())
            if accepted >= self.min_outcomes and len(rows) - accepted >= self.min_outcomes:
                self.campaigns_[str(campaign)] = clone(self.base).fit(
                    X.iloc[rows], y[rows], **weighted(None if w is None else w[rows])
                )
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.empty(len(X))
        for campaign, rows in X.groupby("campaign_id").indices.items():
            p[rows] = self.campaigns_.get(str(campaign), self.pooled_).predict_proba(X.iloc[rows])[:, 1]
        return np.column_stack([1 - p, p])

    def __setstate__(self, state: dict) -> None:
        # fitted by an older release (no ``log_odds_``): its calibration was fitted on probabilities
        super().__setstate__({"log_odds_": False, **state} if "pooled_" in state else state)

    @available_if(lambda self: getattr(self, "log_odds_", True))
    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The log-odds, which the calibration's sigmoid is fitted on. Without them it is fitted on
        probabilities, and no sigmoid of a probability is the identity: the calibrated model
        was 0.03 too high on the least likely tenth and too low on the likeliest (``make bench-loop``'s
        first retrain, refused for it). A model fitted by an older release, unpickled, has none: its
        sigmoid was fitted on probabilities, and its calibration keeps reading those."""
        p = np.clip(self.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def weighted(sample_weight) -> dict:
    """The fit parameters that give a pipeline's last step (``model``) each row's weight."""
    return {} if sample_weight is None else {"model__sample_weight": np.asarray(sample_weight, dtype="float64")}


class Weighted(ClassifierMixin, BaseEstimator):
    """``base``, a pipeline whose last step is ``model``, fitted with each row's weight: a pipeline's
    own ``fit`` does not say it takes ``sample_weight``, so the calibration would keep the weights to
    itself (``ml.train.fit_calibrated``)."""

    def __init__(self, base=None):
        self.base = base

    def fit(self, X: pd.DataFrame, y, sample_weight=None) -> Weighted:
        self.fitted_ = clone(self.base).fit(X, y, **weighted(sample_weight))
        self.classes_ = self.fitted_.classes_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.fitted_.predict_proba(X)

    @available_if(lambda self: hasattr(self.base, "decision_function"))
    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The log-odds, which the calibration's sigmoid is fitted on when the pipeline has them."""
        return self.fitted_.decision_function(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.fitted_.predict(X)
