"""The Great Expectations suites, as code: one per landed entity and one per gated mart.

Each expectation says what it protects; ``critical`` ones fail the run, the others warn. The
landed entities' suites run on DuckDB (``expectations.runner.validate_files``); a query
expectation (``UnexpectedRowsExpectation``) names the column it checks as ``column_checked``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from models.core_banking import CHANNELS, INCOME_BANDS, MERCHANT_CATEGORIES, PRODUCTS, SEGMENTS

Spec = tuple[str, dict, bool]  # (expectation class name, kwargs, critical)


def _volume(ctx: dict) -> list[Spec]:
    """Rows within CRM_MAX_VOLUME_CHANGE of the previous business date's landing (when there is one).
    A snapshot's changes of the day (decision 0013) may be none at all: no volume to expect."""
    previous, change = ctx.get("previous_rows"), ctx.get("max_volume_change", 0.5)
    if ctx.get("changes_only"):
        return []
    if not previous:
        return [("ExpectTableRowCountToBeBetween", {"min_value": 1}, True)]
    low, high = int(previous * (1 - change)), int(previous * (1 + change)) + 1
    return [("ExpectTableRowCountToBeBetween", {"min_value": max(low, 1), "max_value": high}, True)]


def _key(column: str) -> list[Spec]:
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": column}, True),
        ("ExpectColumnValuesToBeUnique", {"column": column}, True),
    ]


SUITES: dict[str, Callable[[dict], list[Spec]]] = {
    "customers": lambda ctx: [
        *_volume(ctx),
        *_key("customer_id"),
        (  # DNI: 8 digits; RUC: 11 digits starting 10 (person), 15, 17 or 20 (company). A query: GX's
            # regex expectation has no SQL for DuckDB, where the landing gate runs ({{ }}: GX's escape; no "(?:", which SQLAlchemy reads as a parameter)
            "UnexpectedRowsExpectation",
            {
                "column_checked": "document_number",
                "unexpected_rows_query": "select customer_id from {batch} where not regexp_full_match("
                "document_number, '([0-9]{{8}}|(10|15|17|20)[0-9]{{9}})')",
            },
            True,
        ),
        ("ExpectColumnValuesToBeInSet", {"column": "document_type", "value_set": ["DNI", "RUC"]}, True),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "birth_date", "min_value": dt.date(1900, 1, 1), "max_value": ctx.get("adult_born_by")},
            True,
        ),
        ("ExpectColumnValuesToBeBetween", {"column": "created_on", "max_value": ctx.get("business_date")}, True),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "segment", "value_set": list(SEGMENTS)},
            True,
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "income_band", "value_set": list(INCOME_BANDS)},
            True,
        ),
        ("ExpectColumnValuesToNotBeNull", {"column": "birth_date"}, True),
        ("ExpectColumnValuesToNotBeNull", {"column": "region"}, False),
    ],
    "accounts": lambda ctx: [
        *_volume(ctx),
        ("ExpectColumnValuesToBeBetween", {"column": "opened_on", "max_value": ctx.get("business_date")}, True),
        *_key("account_id"),
        ("ExpectColumnValuesToNotBeNull", {"column": "customer_id"}, True),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "product", "value_set": list(PRODUCTS)},
            True,
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "currency", "value_set": ["PEN", "USD"]},
            True,
        ),
        ("ExpectColumnValuesToNotBeNull", {"column": "balance"}, True),
    ],
    "transactions": lambda ctx: [
        *_volume(ctx),
        *_key("transaction_id"),
        ("ExpectColumnValuesToBeInSet", {"column": "currency", "value_set": ["PEN", "USD"]}, True),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "merchant_category", "value_set": list(MERCHANT_CATEGORIES), "mostly": 1.0},
            False,
        ),
        ("ExpectColumnValuesToNotBeNull", {"column": "customer_id"}, True),
        ("ExpectColumnValuesToNotBeNull", {"column": "amount"}, True),
        (
            "ExpectColumnValuesToBeBetween",
            {
                "column": "booking_date",
                "min_value": ctx["window_start"],
                "max_value": ctx.get("window_end", ctx["business_date"]),
            },
            True,
        ),
    ],
    "campaign_responses": lambda ctx: [
        # no day-over-day volume: the platform's own lists set it (decision 0026), and the day the
        # bank first works one it jumps (at the demo's size from 100 contacts a day to 7,000);
        # completeness is the reconciliation with the API's count
        *_key("response_id"),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "channel", "value_set": list(CHANNELS)},
            True,
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "response", "value_set": ["ACCEPTED", "DECLINED", "NO_ANSWER"]},
            True,
        ),
        ("ExpectColumnValuesToNotBeNull", {"column": "campaign_id"}, True),
    ],
    "customer_features": lambda ctx: [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}, True),
        *_key("customer_id"),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "age", "min_value": 18, "max_value": 110},
            True,
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "tx_count_30d", "min_value": 0},
            True,
        ),
        ("ExpectColumnValuesToNotBeNull", {"column": "total_balance_pen"}, True),
    ],
}
