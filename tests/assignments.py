"""Synthetic rows of marts.customer_campaign_assignments for the serving tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator

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
                "arm": "model",
                "selection_probability": 1.0,
            }
            for c in range(1, customers + 1)
            for rank, (campaign, channel) in enumerate(plan, start=1)
        ]
    )


@contextlib.contextmanager
def published_home(settings, name: str, day: dt.date, plan: list[tuple[str, str]], **changes) -> Iterator:
    """Settings of a data directory of its own, ``settings.home / name`` (with ``changes``), whose
    live snapshot holds 20 customers' offers of ``plan`` for ``day``; its Redis is stopped after."""
    from crm.services import stop_redis
    from ml.registry import ModelRef
    from ml.score import write_assignments
    from serving.publish import publish_snapshot

    home = settings.replace(home=settings.home / name, **changes)
    home.ensure_dirs()
    write_assignments(day, assignments(20, plan), ModelRef("m", "1"), home)
    publish_snapshot(day, home)
    try:
        yield home
    finally:
        stop_redis(home)
