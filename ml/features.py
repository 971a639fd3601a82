"""What the propensity model reads: one row per customer x campaign, from the warehouse marts."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import pandas as pd

from models.core_banking import CHANNELS

NUMERIC_FEATURES = [
    "age", "tenure_days", "n_products", "total_balance_pen", "total_debt_pen",
    "has_savings", "has_checking", "has_cts", "has_term_deposit", "has_credit_card",
    "has_personal_loan", "has_mortgage", "has_insurance",
    "tx_count_30d", "tx_count_90d", "spend_30d_pen", "spend_90d_pen", "salary_90d_pen",
    "salary_180d_pen", "salary_count_180d", "balance_savings_pen",
    "pos_count_90d", "wallet_count_90d", "accounts_transacted_180d", "days_since_last_tx",
    "consent_sms", "consent_email", "consent_phone", "consent_push", "consent_social",
]  # fmt: skip
CATEGORICAL_FEATURES = ["campaign_id", "segment", "income_band", "region"]
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES

# readable reasons for a sales agent: feature -> (text when the customer is high on it, when low);
# None where the direction says nothing an agent can use
REASON_TEXT: dict[str, tuple[str, str | None]] = {
    "spend_30d_pen": ("spends more than most customers on cards and payments", None),
    "tx_count_30d": ("uses the bank often (many transactions in the last 30 days)", None),
    "pos_count_90d": ("pays by card in shops often", None),
    "wallet_count_90d": ("active mobile-wallet user", None),
    "salary_90d_pen": ("receives a salary into the account", "does not receive a salary with us yet"),
    "total_balance_pen": ("keeps high balances with the bank", None),
    "total_debt_pen": ("already borrows from the bank", "has little or no debt with us"),
    "n_products": ("already holds several of our products", "holds few of our products yet"),
    "has_credit_card": ("holds one of our credit cards", "has no credit card with us yet"),
    "tenure_days": ("long-standing customer", "joined the bank recently"),
    "age": ("older than most of our customers", "younger than most of our customers"),
    "days_since_last_tx": (None, "used the account in the last few days"),
}

# numbers as doubles in SQL: decimals would reach pandas as Python objects (slow and large)
FEATURE_SELECT = ", ".join(
    [f"f.{c}" for c in ("segment", "income_band", "region")]
    + [f"cast(f.{c} as double precision) as {c}" for c in NUMERIC_FEATURES]
)


def feature_columns(features) -> list:
    """The feature columns of a ``customer_features`` table clause, as FEATURE_SELECT selects them."""
    import sqlalchemy as sa

    return [features.c[c] for c in ("segment", "income_band", "region")] + [
        sa.cast(features.c[c], sa.Double()).label(c) for c in NUMERIC_FEATURES
    ]


def cast_features(df: pd.DataFrame) -> pd.DataFrame:
    for col in NUMERIC_FEATURES:
        if df[col].dtype != "float64":
            df[col] = pd.to_numeric(df[col]).astype("float64")
        if df[col].hasnans:  # a column added to the feature store after this date's rows: none, as dbt's coalesce
            df[col] = df[col].fillna(0.0)
    for col in CATEGORICAL_FEATURES:
        df[col] = df[col].astype("string").astype(object)
    return df


_CHANNELS = tuple(c.lower() for c in CHANNELS)
_CONTACTS_30D = ", ".join(
    f"cast(sum(case when channel = '{c.upper()}' then 1 else 0 end) as integer) as contacts_30d_{c}" for c in _CHANNELS
)


def scoring_batches(session, business_date: dt.date, batch_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Every eligible customer x campaign pair of ``business_date`` with its features and the
    customer's contacts per channel in the last 30 days, in chunks of ``batch_rows``. In no set
    order: an order would make the warehouse hold the whole result before the first chunk."""
    batches = contextlib.closing(
        session.batches(
            f"""
        with recent as (
            -- each customer's contacts per channel in the 30 days up to the date (frequency caps)
            select customer_id, {_CONTACTS_30D}
            from marts.fct_campaign_contacts
            where contact_date > :since and contact_date <= :d
            group by customer_id
        )
        select e.customer_id, e.campaign_id, e.offer_id,
               cast(e.value_per_conversion_pen as double precision) as value_pen,
               cast(e.priority_weight as double precision) as priority_weight, e.valid_until,
               {FEATURE_SELECT},
               {", ".join(f"coalesce(r.contacts_30d_{c}, 0) as contacts_30d_{c}" for c in _CHANNELS)}
        from marts.campaign_eligibility as e
        join marts.customer_features as f
          on f.customer_id = e.customer_id and f.as_of_date = e.as_of_date
        left join recent as r on r.customer_id = e.customer_id
        where e.as_of_date = :d
        """,
            {"d": business_date, "since": business_date - dt.timedelta(days=30)},
            rows=batch_rows,
        )
    )
    with batches as stream:  # closed with this generator: the warehouse's result with it
        for batch in stream:
            yield cast_features(batch)
