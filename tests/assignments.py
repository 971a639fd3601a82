"""Synthetic rows of marts.customer_campaign_assignments for the serving tests."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd


def assignments(customers: int, plan: list[tuple[str, str]], offset: int = 0) -> pd.DataFrame:
    """Customers ``offset + 1 .. offset + customers``, each with one offer per (campaign, channel)
    of ``plan``, ranked in plan order. Priority falls with the rank and rises with the customer id,
    so every segment has a known order."""
    return pd.DataFrame(
        [
            {
                "customer_id": c + offset,
                "rank": rank,
                "campaign_id": campaign,
                "offer_id": f"OFR-{campaign}",
                "channel": channel,
                "propensity": 0.5 / rank,
                "priority": 100.0 / rank + c / 1000,
                "valid_until": dt.date(2027, 1, 31),
                "reasons": json.dumps(["holds a savings account", f"{channel} is consented"]),
            }
            for c in range(1, customers + 1)
            for rank, (campaign, channel) in enumerate(plan, start=1)
        ]
    )
