"""What ``crm_daily`` produces, as Airflow assets, and how a DAG scheduled on them finds its date.

``crm_daily`` updates three assets, each event carrying the business date it was for (``extra``):
the day's marts, built and validated (``gate_marts``); the day's assignment (``score_and_assign``);
the offers snapshot (``publish_cache``, with whether it went live). ``crm_retention`` runs on the
snapshot and ``crm_model_training`` on the assignment: after what they follow has been produced,
not at a clock time it was expected by. The Airflow UI's Assets view shows each event and the run
it came from.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset

MARTS = Asset(name="crm_marts", uri="crm://warehouse/marts")
ASSIGNMENT = Asset(name="crm_assignment", uri="crm://warehouse/marts/customer_campaign_assignments")
SNAPSHOT = Asset(name="crm_offers_snapshot", uri="crm://cache/offers_snapshot")


def mark(asset: Asset, business_date: dt.date, **extra) -> None:
    """Put the business date (and ``extra``) on the event the running task emits for ``asset``."""
    from airflow.sdk import get_current_context

    get_current_context()["outlet_events"][asset].extra = {"business_date": business_date.isoformat(), **extra}


def triggering_date(context) -> dt.date | None:
    """The business date of the newest asset event that started this run (None for a run by date)."""
    events = context.get("triggering_asset_events") or {}
    dates = [
        event.extra["business_date"]
        for asset_events in events.values()
        for event in asset_events
        if (event.extra or {}).get("business_date")
    ]
    return dt.date.fromisoformat(max(dates)) if dates else None


def training_as_of(context, params: dict, ds: str | None, weekday: int) -> tuple[dt.date | None, str]:
    """The business date ``crm_model_training`` trains as of, and why; None: this run does not train.
    The param ``business_date`` first; then the assignment event that started the run, when its
    date falls on the training weekday; then, for a run by date, the day before it."""
    from crm.settings import WEEKDAYS

    if params.get("business_date"):
        return dt.date.fromisoformat(params["business_date"]), "the param business_date"
    day = triggering_date(context)
    if day is not None:
        if day.weekday() == weekday:
            return day, f"crm_daily's assignment of {day}, a {WEEKDAYS[weekday]}"
        return (
            None,
            f"crm_daily's assignment of {day}, a {WEEKDAYS[day.weekday()]}: training follows {WEEKDAYS[weekday]}s'",
        )
    if ds:
        return dt.date.fromisoformat(ds) - dt.timedelta(days=1), "the day before the run's date"
    return None, "no business_date param, no assignment event and no date"
