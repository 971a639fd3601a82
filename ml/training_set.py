"""The point-in-time training set: each past contact with the features its customer had before it.

A contact made on day C is joined to the customer's row of ``marts.customer_features`` with the
latest ``as_of_date`` before C (C - 1 when the daily pipeline ran that day), and never one older
than ``feature_step_days``: the features are what the bank knew before it called, never after.
The label is the contact's outcome, ``is_accepted``, and only contacts whose campaign's response
window has closed by the training date are used (before that, a contact that has not accepted yet
still may). The bank's response feed carries no response date: an ``ACCEPTED`` outcome recorded
for the contact is the acceptance within the window.

The feature store fills up day by day as ``crm_daily`` runs. Where it has no row close enough
before a contact (the first training of a new installation, or a gap), :func:`backfill_features`
builds the features as of the missing dates, every ``feature_step_days`` days, the way the daily
pipeline does: customers and accounts extracted as of that date through the integration API, then
the dbt models up to ``customer_features`` for that date. Transactions and past contacts are
already in the warehouse (the daily extraction keeps 180 and 365 days of them).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd

from crm.settings import Settings, get_settings
from crm.warehouse import connect, run_dbt_in_process
from ml.features import FEATURE_SELECT, cast_features

log = logging.getLogger(__name__)

SNAPSHOT_ENTITIES = ("customers", "accounts")


class FeatureBackfillError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainingWindow:
    """Which past contacts a training run learns from, and how stale their features may be."""

    business_date: dt.date
    window_days: int = 84  # contacts of the last 84 days (the 90-day features need 180 days of transactions)
    feature_step_days: int = 7  # features at most this many days before the contact

    def __post_init__(self) -> None:
        if self.window_days < 14:
            raise ValueError(f"training_window_days must be at least 14 (got {self.window_days})")
        if not 1 <= self.feature_step_days <= 31:
            raise ValueError(f"feature_step_days must be between 1 and 31 (got {self.feature_step_days})")

    @property
    def first_contact(self) -> dt.date:
        return self.business_date - dt.timedelta(days=self.window_days)

    def params(self) -> list:
        """The query parameters of the contacts this window covers (see ``_CONTACTS``)."""
        return [self.first_contact, self.business_date]


# the contacts of the window whose outcome is final on the business date
_CONTACTS = """
    select contact_id, customer_id, campaign_id, contact_date, is_accepted as accepted
    from marts.fct_campaign_contacts
    where contact_date >= ? and contact_date + response_window_days <= ?
"""


def _usable_features(step: int) -> str:
    """The CTEs both queries start from: the window's final contacts, the stored feature dates, and
    ``usable``: per contact, the stored dates close enough before it (at most ``step`` days)."""
    return f"""
        with contacts as ({_CONTACTS}),
        stored as (select distinct as_of_date from marts.customer_features),
        usable as (
            select c.contact_id, s.as_of_date from contacts as c
            join stored as s on s.as_of_date < c.contact_date and s.as_of_date >= c.contact_date - {step}
        )
    """


def feature_dates_missing(con, window: TrainingWindow) -> list[dt.date]:
    """As-of dates to backfill so that every contact of the window has features at most
    ``feature_step_days`` before it: for a contact on C with none, the date ``D - 1 - k * step``
    (the fixed weekly grid counted back from the business date D) just before C."""
    step = window.feature_step_days
    rows = con.execute(
        f"""
        {_usable_features(step)},
        uncovered as (
            select distinct contact_date from contacts
            where contact_id not in (select contact_id from usable)
        )
        select distinct cast(1 + {step} * ceil((? - contact_date) / {step}) as integer) as days_back
        from uncovered
        """,
        [*window.params(), window.business_date],
    ).fetchall()
    return sorted(window.business_date - dt.timedelta(days=int(r[0])) for r in rows)


def backfill_features(dates: list[dt.date], settings: Settings | None = None) -> dict[str, int]:
    """Build ``marts.customer_features`` as of each of ``dates`` (rows per date).

    The dbt views of the chain render one business date at a time; the latest loaded date's are
    put back at the end, so the daily pipeline's models read what they read before."""
    from expectations.runner import gate_landing
    from ingestion.extract import extract_entity
    from ingestion.load import load_business_date

    settings = settings or get_settings()
    if not dates:
        return {}
    target_path = settings.home / "dbt-target" / "feature-backfill"  # apart from the DAG's manifest
    counts: dict[str, int] = {}
    for day in sorted(dates):
        for entity in SNAPSHOT_ENTITIES:
            extract_entity(entity, day, settings)
            gate_landing(entity, day, settings)
        load_business_date(day, settings, entities=SNAPSHOT_ENTITIES)
        _dbt_features(day, settings, target_path, "+customer_features")
        with connect(settings) as con:
            counts[day.isoformat()] = con.sql(
                "select count(*) from marts.customer_features where as_of_date = ?", params=[day]
            ).fetchall()[0][0]
        log.info("features as of %s backfilled: %d customers", day, counts[day.isoformat()])
    with connect(settings) as con:
        latest = con.sql("select max(_business_date) from raw.customers").fetchall()[0][0]
    _dbt_features(latest, settings, target_path, "+customer_features", "--exclude", "customer_features")
    return counts


def _dbt_features(day: dt.date, settings: Settings, target_path, *select: str) -> None:
    ok, error = run_dbt_in_process(
        "run", "--select", *select,
        duckdb_path=settings.duckdb_path, business_date=day, target=settings.dbt_target, target_path=target_path,
    )  # fmt: skip
    if not ok:
        raise FeatureBackfillError(f"dbt could not build customer_features as of {day}: {error}")


def training_frame(con, window: TrainingWindow) -> pd.DataFrame:
    """Every final contact of the window with its label and its point-in-time features, by date."""
    step = window.feature_step_days
    df = con.execute(
        f"""
        {_usable_features(step)},
        dated as (
            select c.*, u.feature_date from contacts as c
            join (select contact_id, max(as_of_date) as feature_date from usable group by contact_id) as u
              on u.contact_id = c.contact_id
        )
        select d.contact_id, d.contact_date, d.feature_date, d.customer_id, d.campaign_id, d.accepted,
               {FEATURE_SELECT}
        from dated as d
        join marts.customer_features as f on f.customer_id = d.customer_id and f.as_of_date = d.feature_date
        order by d.contact_date, d.contact_id
        """,
        window.params(),
    ).df()
    return cast_features(df)
