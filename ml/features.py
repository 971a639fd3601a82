"""What the propensity model reads: one row per customer x campaign, from the warehouse marts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pandas as pd

NUMERIC_FEATURES = [
    "age", "tenure_days", "n_products", "total_balance_pen", "total_debt_pen",
    "has_savings", "has_checking", "has_cts", "has_term_deposit", "has_credit_card",
    "has_personal_loan", "has_mortgage", "has_insurance",
    "tx_count_30d", "tx_count_90d", "spend_30d_pen", "spend_90d_pen", "salary_90d_pen",
    "pos_count_90d", "wallet_count_90d", "days_since_last_tx",
    "consent_sms", "consent_email", "consent_phone", "consent_push", "consent_social",
]  # fmt: skip
CATEGORICAL_FEATURES = ["campaign_id", "segment", "income_band", "region"]
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES

# readable reasons for a sales agent: feature -> text when the customer is high on it
REASON_TEXT = {
    "spend_30d_pen": "spends more than most customers on cards and payments",
    "tx_count_30d": "uses the bank often (many transactions in the last 30 days)",
    "total_balance_pen": "keeps high balances with the bank",
    "salary_90d_pen": "receives a salary into the account",
    "n_products": "already holds several of our products",
    "tenure_days": "long-standing customer",
    "wallet_count_90d": "active mobile-wallet user",
}

FEATURE_SELECT = ", ".join(f"f.{c}" for c in ["segment", "income_band", "region", *NUMERIC_FEATURES])


def cast_features(df: pd.DataFrame) -> pd.DataFrame:
    for col in NUMERIC_FEATURES:
        df[col] = pd.to_numeric(df[col]).astype("float64")
    for col in CATEGORICAL_FEATURES:
        df[col] = df[col].astype("string").astype(object)
    return df


def scoring_batches(con, business_date: dt.date, batch_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Every eligible customer x campaign pair of ``business_date`` with its features, in chunks."""
    reader = con.sql(
        f"""
        select e.customer_id, e.campaign_id, e.offer_id, e.channel,
               cast(e.value_per_conversion_pen as double) as value_pen,
               cast(e.priority_weight as double) as priority_weight, e.valid_until,
               {FEATURE_SELECT}
        from marts.campaign_eligibility as e
        join marts.customer_features as f
          on f.customer_id = e.customer_id and f.as_of_date = e.as_of_date
        where e.as_of_date = ?
        order by e.customer_id, e.campaign_id
        """,
        params=[business_date],
    ).to_arrow_reader(batch_rows)
    for batch in reader:
        yield cast_features(batch.to_pandas())
