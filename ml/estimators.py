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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone

# what the candidate reads of ml.features.FEATURES, and what it derives from them
INPUTS = ["age", "salary_count_180d", "salary_180d_pen", "balance_savings_pen", "tx_count_90d", "has_credit_card",
          "consent_push", "consent_social"]  # fmt: skip
DERIVED = ["age", "young_family_age", "has_salary", "log_average_salary", "log_savings_balance", "tx_count_90d",
           "has_credit_card", "consent_push", "consent_social"]  # fmt: skip
MIN_OUTCOMES = 30  # acceptances and refusals a campaign needs for a model of its own


def derived_features(X: pd.DataFrame) -> pd.DataFrame:
    """The candidate's features from the feature store's columns (missing values as none: 0)."""
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


def logistic():
    """Derived features, standardised, into a logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return Pipeline(
        [
            ("features", FunctionTransformer(derived_features)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=1.0, max_iter=3000)),
        ]
    )


class PerCampaign(ClassifierMixin, BaseEstimator):
    """``base`` fitted once per campaign (the ``campaign_id`` column) with at least
    ``min_outcomes`` acceptances and refusals, and once on every row: the pooled model scores a
    campaign it has no model of (a new one, or too few outcomes)."""

    def __init__(self, base=None, min_outcomes: int = MIN_OUTCOMES):
        self.base = base
        self.min_outcomes = min_outcomes

    def fit(self, X: pd.DataFrame, y) -> PerCampaign:
        y = np.asarray(y)
        self.classes_ = np.array([0, 1])
        self.pooled_ = clone(self.base).fit(X, y)
        self.campaigns_ = {}
        for campaign, rows in X.groupby("campaign_id").indices.items():
            accepted = int(y[rows].sum())
            if accepted >= self.min_outcomes and len(rows) - accepted >= self.min_outcomes:
                self.campaigns_[str(campaign)] = clone(self.base).fit(X.iloc[rows], y[rows])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.empty(len(X))
        for campaign, rows in X.groupby("campaign_id").indices.items():
            p[rows] = self.campaigns_.get(str(campaign), self.pooled_).predict_proba(X.iloc[rows])[:, 1]
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
