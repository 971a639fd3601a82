"""The day's extraction plan: what to fetch of each entity, and the jobs it is cut into.

A windowed entity (transactions, campaign responses) is fetched for its day and the late-arrival
days before it, or, when ``raw`` misses an earlier day of its feature window, from the first
missing day (the history load), cut into slices of whole days by the API's count; a snapshot
entity (customers, accounts) is fetched whole on Sundays and when the previous day's snapshot is
missing, else its changes since the day before. Each job is an :class:`ExtractionJob`: one mapped
``extract`` and ``gate_landing`` task of ``crm_daily``, carried between them as its XCom
(:meth:`ExtractionJob.as_xcom`). The plan reads the warehouse once, before the extraction.
"""

from __future__ import annotations

import datetime as dt
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass

from crm.settings import Settings
from crm.warehouse import Session, warehouse
from models.core_banking import ENTITIES

log = logging.getLogger(__name__)

ENDPOINTS = {
    "customers": "/v1/customers",
    "accounts": "/v1/accounts",
    "transactions": "/v1/transactions",
    "campaign_responses": "/v1/campaign-responses",
}


Span = tuple[dt.date, dt.date]


@dataclass(frozen=True)
class ExtractionJob:
    """One extraction job: ``entity`` whole as of the date, its records changed ``since`` a date,
    or (a windowed entity) its planned ``span`` of days, all of it or the slice ``chunk``."""

    entity: str
    label: str  # how the Airflow UI tells the mapped tasks apart
    span: Span | None = None
    since: dt.date | None = None
    chunk: Span | None = None

    def __post_init__(self) -> None:
        if self.entity not in ENTITIES:
            raise ValueError(f"extraction job {self.label!r}: entity {self.entity!r} is not one of {list(ENTITIES)}")
        for name in ("span", "chunk"):
            days = getattr(self, name)
            if days is not None and not days[0] <= days[1]:
                raise ValueError(f"extraction job {self.label!r}: {name} {days[0]}..{days[1]} ends before it starts")

    @property
    def part(self) -> dt.date | None:
        """The first day of the slice it lands (its file's name); None: it lands the partition whole."""
        return self.chunk[0] if self.chunk else None

    def as_xcom(self) -> dict:
        """The job as JSON, as the DAG maps it over its tasks."""
        days = lambda pair: [pair[0].isoformat(), pair[1].isoformat()] if pair else None  # noqa: E731
        return {"entity": self.entity, "span": days(self.span), "since": self.since.isoformat() if self.since else None,
                "chunk": days(self.chunk), "label": self.label}  # fmt: skip

    @classmethod
    def from_xcom(cls, value: dict) -> ExtractionJob:
        """The job an ``extract`` or ``gate_landing`` task is mapped over (:meth:`as_xcom`)."""

        def days(name: str) -> Span | None:
            pair = value.get(name)
            return (dt.date.fromisoformat(pair[0]), dt.date.fromisoformat(pair[1])) if pair else None

        since = value.get("since")
        return cls(
            value["entity"],
            value["label"],
            days("span"),
            dt.date.fromisoformat(since) if since else None,
            days("chunk"),
        )


def window(entity: str, business_date: dt.date, settings: Settings) -> tuple[dt.date, dt.date] | None:
    """The date range of an entity the business date's marts need in ``raw`` (the longest feature
    window; None: a snapshot as of the date). A full load extracts it whole; the daily delta only
    what ``raw`` does not hold yet (``plan_window``)."""
    days = {
        "transactions": settings.extraction.transaction_lookback_days,
        "campaign_responses": settings.extraction.response_lookback_days,
    }
    if entity not in days:
        return None
    return business_date - dt.timedelta(days=days[entity] - 1), business_date


def plan_window(
    entity: str, business_date: dt.date, covered: Mapping[dt.date, dt.date], settings: Settings
) -> tuple[dt.date, dt.date] | None:
    """What the daily extraction of a windowed entity fetches, given the days ``raw`` already holds
    (``covered``: each with the business date of the run that last loaded it): the day and the
    ``CRM_LATE_ARRIVAL_DAYS`` before it (late bookings: their days are replaced whole), or, when an
    earlier day of the feature window is missing (the first run on an empty warehouse, a gap) or was
    never read for the last time (its last load less than ``CRM_LATE_ARRIVAL_DAYS`` after it: the
    runs that would have re-read it failed or were skipped), everything from the first such day. One
    path: the history load is the same plan."""
    full = window(entity, business_date, settings)
    if full is None:
        return None
    late = dt.timedelta(days=settings.extraction.late_arrival_days)
    delta_start = max(full[0], business_date - late)
    day, missing = full[0], None
    while day < delta_start:
        if day not in covered or covered[day] < day + late:
            missing = day
            break
        day += dt.timedelta(days=1)
    return (missing or delta_start, business_date)


def chunks(span: tuple[dt.date, dt.date], parts: int) -> list[tuple[dt.date, dt.date]]:
    """``span`` cut into ``parts`` consecutive slices of whole days, as even as days allow."""
    days = (span[1] - span[0]).days + 1
    parts = max(1, min(parts, days))
    out, first = [], span[0]
    for i in range(parts):
        size = days // parts + (1 if i < days % parts else 0)
        last = first + dt.timedelta(days=size - 1)
        out.append((first, last))
        first = last + dt.timedelta(days=1)
    return out


def slices(
    plan: dict, settings: Settings, count: typing.Callable[[str, dict], int] | None = None
) -> list[ExtractionJob]:
    """The extraction jobs of a plan (:func:`plan_extraction`), one mapped ``extract`` task each: a
    snapshot whole or its changes; a windowed entity's planned days cut into slices of whole days
    of about ``CRM_EXTRACT_SLICE_RECORDS`` records, by the API's count of the planned request
    (``count(endpoint, params)``; without it, one slice). A 1,000,000-customer bank's history of
    transactions is 27 slices; a small bank's, and an ordinary day's delta, one."""
    jobs = []
    for entity in ENTITIES:
        planned = plan.get(entity)
        if isinstance(planned, list):
            span = (dt.date.fromisoformat(planned[0]), dt.date.fromisoformat(planned[1]))
            records = count(ENDPOINTS[entity], {"date_from": planned[0], "date_to": planned[1]}) if count else 0
            parts = chunks(span, -(-records // settings.extraction.slice_records))
            for first, last in parts:
                jobs.append(ExtractionJob(entity, f"{entity} {first.isoformat()}..{last.isoformat()}", span=span,
                                          chunk=(first, last) if len(parts) > 1 else None))  # fmt: skip
        else:
            since = (
                dt.date.fromisoformat(planned["since"]) if isinstance(planned, dict) and planned.get("since") else None
            )
            label = f"{entity} changed since {since.isoformat()}" if since else f"{entity} snapshot"
            jobs.append(ExtractionJob(entity, label, since=since))
    return jobs


FULL_SNAPSHOT_WEEKDAY = 6  # Sunday: customers and accounts are extracted whole once a week


def _snapshot_plan(session: Session, entity: str, business_date: dt.date) -> dict | None:
    """A snapshot entity's extraction: the records changed on the day, the rest carried from the
    previous day's snapshot in ``raw``; whole on Sundays and whenever that snapshot is missing."""
    from ingestion.raw_load import holds_snapshot

    if business_date.weekday() == FULL_SNAPSHOT_WEEKDAY:
        return None
    held = holds_snapshot(session, entity, business_date - dt.timedelta(days=1))
    return {"since": business_date.isoformat()} if held else None


def plan_extraction(business_date: dt.date, settings: Settings) -> dict[str, list[str] | dict | None]:
    """What the day's extraction fetches of each entity: the delta of a windowed entity (its day and
    the late-arrival days), or its history from the first day ``raw`` is missing; a snapshot's
    changes since the day before (``{"since": D}``) or, None, the whole snapshot. Read from the
    warehouse once per run, before the extraction (``crm_daily``'s ``plan_extraction`` task)."""
    from ingestion.raw_load import covered_days, create_raw_tables  # the raw tables' coverage

    plan: dict[str, list[str] | dict | None] = {}
    with warehouse(settings).begin() as session:
        create_raw_tables(session)
        for entity in ENTITIES:
            full = window(entity, business_date, settings)
            if full is None:
                plan[entity] = _snapshot_plan(session, entity, business_date)
                continue
            covered = covered_days(session, entity, full[0], business_date)
            span = plan_window(entity, business_date, covered, settings)
            plan[entity] = [span[0].isoformat(), span[1].isoformat()]
    log.info("extraction plan for %s: %s", business_date, plan)
    return plan


def extraction_jobs(business_date: dt.date, settings: Settings) -> list[ExtractionJob]:
    """The day's extraction jobs (``crm_daily``'s ``plan_extraction`` task: one mapped ``extract``
    and ``gate_landing`` each), from its plan, sliced by the API's counts."""
    from crm.integration_api import client_for

    plan = plan_extraction(business_date, settings)
    with client_for(settings) as client:  # the API's counts size the slices
        return slices(plan, settings, client.control_total)
