"""The Great Expectations suites, as code: one per landed entity and one per gated mart.

Each expectation says what it protects; ``critical`` ones fail the run, the others warn.
"""

from __future__ import annotations

from collections.abc import Callable

from models.core_banking import CHANNELS, INCOME_BANDS, PRODUCTS, SEGMENTS

Spec = tuple[str, dict, bool]  # (expectation class name, kwargs, critical)


def _key(column: str) -> list[Spec]:
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": column}, True),
        ("ExpectColumnValuesToBeUnique", {"column": column}, True),
    ]


SUITES: dict[str, Callable[[dict], list[Spec]]] = {
    "customers": lambda ctx: [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}, True),
        *_key("customer_id"),
        (
            "ExpectColumnValuesToMatchRegex",
            {"column": "document_number", "regex": r"^(\d{8}|\d{11})$"},
            True,
        ),
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
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}, True),
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
        *_key("transaction_id"),
        ("ExpectColumnValuesToNotBeNull", {"column": "customer_id"}, True),
        ("ExpectColumnValuesToNotBeNull", {"column": "amount"}, True),
        (
            "ExpectColumnValuesToBeBetween",
            {
                "column": "booking_date",
                "min_value": ctx["window_start"],
                "max_value": ctx["business_date"],
            },
            True,
        ),
    ],
    "campaign_responses": lambda ctx: [
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
