"""The point-in-time training set: each past contact with the features its customer had before it.

A contact made on day C is joined to the customer's row of ``marts.customer_features`` with the
latest ``as_of_date`` before C (C - 1 when the daily pipeline ran that day), and never one older
than ``feature_step_days``: the features are what the bank knew before it called, never after.
The label is the contact's outcome, ``is_accepted``, and only contacts whose outcome is final in
the warehouse are used (decision 0029): those whose day was loaded by the run that re-reads it for
the last time, ``CRM_LATE_ARRIVAL_DAYS`` after it (``raw._coverage`` says which run last loaded each
day). Under the daily schedule, a training as of D learns from the contacts up to D - 3. Read from
what was loaded, not from D: after days without a successful ``crm_daily`` the unread days wait,
instead of counting their late acceptances as refusals. A response that arrives later than the
re-read is never extracted at all, so waiting longer learns nothing more; waiting for the
campaign's response window (14 to 60 days) left out 37 % of an 84-day window's contacts, and every
contact of a closed loop's first fortnight.

The feature store fills up day by day as ``crm_daily`` runs. Where it has no row close enough
before a contact (the first training of a new installation, or a gap), :func:`feature_dates_missing`
says which as-of dates to build, every ``feature_step_days`` days. Building them is sequenced where
stages are (``entrypoints/tasks.py``, the ``backfill_features`` task): the daily pipeline's own
extraction, landing gate, raw load and dbt, for customers and accounts as of each date.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from crm.warehouse import Session, as_date, days_after
from ml.features import FEATURES, cast_features, feature_columns


@dataclass(frozen=True)
class TrainingWindow:
    """Which past contacts a training run learns from, and how stale their features may be."""

    business_date: dt.date
    window_days: int = 84  # contacts of the last 84 days (the 90-day features need 180 days of transactions)
    feature_step_days: int = 7  # features at most this many days before the contact
    late_arrival_days: int = 3  # CRM_LATE_ARRIVAL_DAYS: the run of this many days on reads a day for the last time

    def __post_init__(self) -> None:
        if self.window_days < 14:
            raise ValueError(f"training_window_days must be at least 14 (got {self.window_days})")
        if not 1 <= self.feature_step_days <= 31:
            raise ValueError(f"feature_step_days must be between 1 and 31 (got {self.feature_step_days})")
        if self.late_arrival_days < 0:
            raise ValueError(f"CRM_LATE_ARRIVAL_DAYS must be at least 0 (got {self.late_arrival_days})")

    @property
    def first_contact(self) -> dt.date:
        return self.business_date - dt.timedelta(days=self.window_days)


_CONTACT_COLUMNS = ("contact_id", "customer_id", "campaign_id", "contact_date", "is_accepted", "list_date")
CONTACTS = sa.table("fct_campaign_contacts", *map(sa.column, _CONTACT_COLUMNS), schema="marts")
# the days raw holds, each with the business date whose run last loaded it (ingestion.raw_load.COVERAGE)
COVERAGE = sa.table("_coverage", *map(sa.column, ("entity", "day", "_business_date")), schema="raw")
FEATURE_ROWS = sa.table("customer_features", *map(sa.column, ("as_of_date", "customer_id", *FEATURES)), schema="marts")


def _lists_known(session: Session) -> bool:
    """Whether contacts can be traced to the platform's lists: the assignments exist (not before
    the first scoring) and the contacts carry ``list_date`` (a mart an older release built gains it
    at the next dbt run). From ``information_schema``, fetched whole: an inspector's query left open
    on DuckDB's connection would stop the Arrow read that follows."""
    found = session.rows(
        "select table_name, column_name from information_schema.columns where table_schema = 'marts' and "
        "((table_name = 'customer_campaign_assignments' and column_name = 'arm') "
        "or (table_name = 'fct_campaign_contacts' and column_name = 'list_date'))"
    )
    return len({str(r[0]).lower() for r in found}) == 2


def _usable_features(window: TrainingWindow, listed: bool = False) -> tuple[sa.CTE, sa.CTE]:
    """What both queries start from: ``contacts``, the window's contacts before the business date
    whose outcome was final on it (their day loaded by a run ``late_arrival_days`` or more after it,
    and not after the business date), and
    ``usable``: per contact, the stored feature dates close enough before it (at most
    ``feature_step_days``)."""
    c = CONTACTS.c
    list_date = c.list_date if listed else sa.cast(sa.null(), sa.Date())
    contacts = sa.select(
        c.contact_id,
        c.customer_id,
        c.campaign_id,
        c.contact_date,
        c.is_accepted.label("accepted"),
        list_date.label("list_date"),
    ).where(
        c.contact_date >= window.first_contact,
        c.contact_date < window.business_date,
        sa.exists().where(
            COVERAGE.c.entity == "campaign_responses",
            COVERAGE.c.day == c.contact_date,
            COVERAGE.c._business_date >= days_after(c.contact_date, window.late_arrival_days),
            # as known on the business date: a run of a later date (training after it, a backfill)
            # made a day final that was not yet final then
            COVERAGE.c._business_date <= window.business_date,
        ),
    )
    contacts = contacts.cte("contacts")
    stored = sa.select(FEATURE_ROWS.c.as_of_date).distinct().cte("stored")
    usable = sa.select(contacts.c.contact_id, stored.c.as_of_date).join_from(
        contacts, stored, sa.and_(stored.c.as_of_date < contacts.c.contact_date,
                                  stored.c.as_of_date >= days_after(contacts.c.contact_date, -window.feature_step_days))
    ).cte("usable")  # fmt: skip
    return contacts, usable


def feature_dates_missing(session: Session, window: TrainingWindow) -> list[dt.date]:
    """As-of dates to backfill so that every contact of the window has features at most
    ``feature_step_days`` before it: for a contact on C with none, the date ``D - 1 - k * step``
    (the fixed weekly grid counted back from the business date D) just before C."""
    contacts, usable = _usable_features(window)
    uncovered = sa.select(contacts.c.contact_date).distinct()
    uncovered = uncovered.where(contacts.c.contact_id.not_in(sa.select(usable.c.contact_id)))
    step, d = window.feature_step_days, window.business_date
    days_back = {1 + step * math.ceil((d - as_date(r[0])).days / step) for r in session.rows(uncovered)}
    return sorted(d - dt.timedelta(days=n) for n in days_back)


ASSIGNED = sa.table("customer_campaign_assignments", *map(sa.column, ("business_date", "customer_id", "campaign_id",
                                                                      "arm", "selection_probability")),
                    schema="marts")  # fmt: skip


def training_frame(session: Session, window: TrainingWindow) -> pd.DataFrame:
    """Every final contact of the window with its label and its point-in-time features, by date,
    ``arm``: the arm of the platform's list the bank contacted it from, None for a contact of the
    bank's own campaigns, and ``selection_probability``: the probability its offer was drawn with
    in that arm (None for the bank's own)."""
    listed = _lists_known(session)
    contacts, usable = _usable_features(window, listed)
    latest = sa.select(usable.c.contact_id, sa.func.max(usable.c.as_of_date).label("feature_date"))
    latest = latest.group_by(usable.c.contact_id).subquery("latest")
    f = FEATURE_ROWS.alias("f")
    query = (
        sa.select(
            contacts.c.contact_id,
            contacts.c.contact_date,
            latest.c.feature_date,
            contacts.c.customer_id,
            contacts.c.campaign_id,
            contacts.c.accepted,
            (ASSIGNED.c.arm if listed else sa.cast(sa.null(), sa.Unicode(16))).label("arm"),
            (ASSIGNED.c.selection_probability if listed else sa.cast(sa.null(), sa.Double())).label(
                "selection_probability"
            ),
            *feature_columns(f),
        )
        .join_from(contacts, latest, latest.c.contact_id == contacts.c.contact_id)
        .join(f, sa.and_(f.c.customer_id == contacts.c.customer_id, f.c.as_of_date == latest.c.feature_date))
        .order_by(contacts.c.contact_date, contacts.c.contact_id)
    )
    if listed:
        query = query.outerjoin(ASSIGNED, sa.and_(
            ASSIGNED.c.customer_id == contacts.c.customer_id, ASSIGNED.c.campaign_id == contacts.c.campaign_id,
            ASSIGNED.c.business_date == contacts.c.list_date))  # fmt: skip
    df = session.frame(query)
    for column in ("contact_date", "feature_date"):
        df[column] = pd.to_datetime(df[column])
    return cast_features(df)
