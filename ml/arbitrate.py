"""Arbitration: from scored customer x campaign pairs to at most N offers per customer.

priority = propensity x value of the offer (PEN) x campaign weight. Pairs are taken greedily in
priority order (ties broken by customer and campaign id, so the same inputs always give the same
assignment), skipping a pair when its customer already has N offers, its campaign has used its
daily capacity, or its channel has used its daily capacity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def capacities(con) -> tuple[dict[str, int], dict[str, int]]:
    """The daily capacities arbitration respects: per campaign, and per channel (contact policies)."""
    campaign = dict(con.execute("select campaign_id, daily_capacity from staging.stg_campaigns__campaigns").fetchall())
    channel = dict(
        con.execute("select channel, daily_capacity from staging.stg_campaigns__contact_policies").fetchall()
    )
    return campaign, channel


def arbitrate(
    pairs: pd.DataFrame,
    max_offers: int,
    campaign_capacity: dict[str, int],
    channel_capacity: dict[str, int],
) -> pd.DataFrame:
    """Assigned pairs with their ``rank`` (1 = best) per customer, in customer then rank order."""
    if pairs.empty:
        return pairs.assign(rank=pd.Series(dtype="int64"))
    pairs = pairs.assign(priority=pairs["propensity"] * pairs["value_pen"] * pairs["priority_weight"])
    pairs = pairs.sort_values(
        ["priority", "customer_id", "campaign_id"],
        ascending=[False, True, True],
        kind="stable",
    )
    customer_codes, _ = pd.factorize(pairs["customer_id"])
    campaign_codes, campaigns = pd.factorize(pairs["campaign_id"])
    channel_codes, channels = pd.factorize(pairs["channel"])
    per_customer = np.zeros(customer_codes.max() + 1, dtype=np.int64)
    campaign_left = np.array(
        [campaign_capacity.get(c, np.iinfo(np.int64).max) for c in campaigns],
        dtype=np.int64,
    )
    channel_left = np.array(
        [channel_capacity.get(c, np.iinfo(np.int64).max) for c in channels],
        dtype=np.int64,
    )
    keep = np.zeros(len(pairs), dtype=bool)
    for i, (cu, ca, ch) in enumerate(zip(customer_codes, campaign_codes, channel_codes, strict=True)):
        if per_customer[cu] < max_offers and campaign_left[ca] > 0 and channel_left[ch] > 0:
            keep[i] = True
            per_customer[cu] += 1
            campaign_left[ca] -= 1
            channel_left[ch] -= 1
    chosen = pairs[keep].copy()
    chosen["rank"] = chosen.groupby("customer_id").cumcount() + 1
    return chosen.sort_values(["customer_id", "rank"]).reset_index(drop=True)
