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


def triggering_dates(context) -> list[dt.date]:
    """The business dates of the asset events that started this run (none for a run by date), oldest
    first. A backfill's events are left out: an old date's data, never a reason to retrain or purge."""
    events = context.get("triggering_asset_events") or {}
    return sorted(
        {
            dt.date.fromisoformat(event.extra["business_date"])
            for asset_events in events.values()
            for event in asset_events
            if (event.extra or {}).get("business_date")
            and not str(getattr(event, "source_run_id", "") or "").startswith("backfill__")
        }
    )


def triggering_date(context) -> dt.date | None:
    """The newest of :func:`triggering_dates`."""
    dates = triggering_dates(context)
    return dates[-1] if dates else None


def training_as_of(context, params: dict, ds: str | None, weekday: int) -> tuple[dt.date | None, str]:
    """The business date ``crm_model_training`` trains as of, and why; None: this run does not train.
    The param ``business_date`` first; then the newest assignment event that started the run whose
    date falls on the training weekday (several may have queued up; a backfill's never count); then,
    for a run by date, the day before it."""
    from crm.settings import WEEKDAYS

    if params.get("business_date"):
        return dt.date.fromisoformat(params["business_date"]), "the param business_date"
    days = triggering_dates(context)
    if days:
        on_weekday = [d for d in days if d.weekday() == weekday]
        if on_weekday:
            return on_weekday[-1], f"crm_daily's assignment of {on_weekday[-1]}, a {WEEKDAYS[weekday]}"
        day = days[-1]
        return (
            None,
            f"crm_daily's assignment of {day}, a {WEEKDAYS[day.weekday()]}: training follows {WEEKDAYS[weekday]}s'",
        )
    if context.get("triggering_asset_events"):
        return None, "only a backfill's assignments: training follows the daily runs"
    if ds:
        return dt.date.fromisoformat(ds) - dt.timedelta(days=1), "the day before the run's date"
    return None, "no business_date param, no assignment event and no date"
