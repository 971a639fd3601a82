"""Load the landed partitions of one business date into the warehouse's ``raw`` schema.

Snapshots (customers, accounts) are kept per business date; windowed entities (transactions,
campaign responses) replace the rows of the days their landed range covers, and record those days
in ``raw._coverage`` with the business date of the load, from which the next extraction plans its
delta (``ingestion.plan``) and training reads which outcomes are final (decision 0029). A load of
an earlier date than the one that last loaded a day (a backfill) leaves that day as the later run
read it.
Everything for the date goes in one transaction, so a reader never sees half a load and a rerun
gives the same rows.

Every engine through the one warehouse interface (``crm.warehouse``): the tables and statements
are SQLAlchemy Core, written by each engine's dialect (DuckDB, PostgreSQL, Azure SQL); the landed
Parquet streams in batches (DuckDB scans them in place; a server gets batched inserts).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from crm.settings import Settings
from crm.warehouse import Session, as_date, metadata, warehouse
from ingestion.landing import landed_since, landed_window, partition_files
from models.core_banking import ENTITIES, PRIMARY_KEYS

log = logging.getLogger(__name__)

WINDOW_COLUMN = {"transactions": "booking_date", "campaign_responses": "contact_date"}
BATCH_ROWS = 50_000  # landed rows per insert batch (bounded memory)


def _landed(
    business_date: dt.date, settings: Settings, entities: Sequence[str] = tuple(ENTITIES)
) -> dict[str, list[Path]]:
    """Each entity's landed files for the date (one, or one per slice of a history load)."""
    paths = {e: partition_files(settings.landing_dir, e, business_date) for e in entities}
    missing = [e for e, p in paths.items() if not p]
    if missing:
        raise FileNotFoundError(f"nothing landed for {business_date} for: {', '.join(missing)}; run the extraction")
    return paths


def _column_type(arrow_type: pa.DataType) -> sa.types.TypeEngine:
    if pa.types.is_int64(arrow_type):
        return sa.BigInteger()
    if pa.types.is_boolean(arrow_type):
        return sa.Boolean()
    if pa.types.is_date32(arrow_type):
        return sa.Date()
    if pa.types.is_decimal(arrow_type):
        return sa.Numeric(arrow_type.precision, arrow_type.scale)
    if pa.types.is_string(arrow_type):
        return sa.Unicode(400)
    raise TypeError(f"no warehouse type for the arrow type {arrow_type}")


@cache
def raw_table(entity: str) -> sa.Table:
    """``raw.<entity>``: one column per contract field, and the ``_business_date`` it was loaded for."""
    from ingestion.contract import arrow_schema

    columns = [sa.Column(f.name, _column_type(f.type), nullable=f.nullable) for f in arrow_schema(ENTITIES[entity])]
    return sa.Table(entity, metadata, *columns, sa.Column("_business_date", sa.Date()), schema="raw")


# the days of a windowed entity raw holds: (entity, day, the business date whose load wrote it)
COVERAGE = sa.Table(
    "_coverage", metadata,
    sa.Column("entity", sa.Unicode(40), nullable=False), sa.Column("day", sa.Date(), nullable=False),
    sa.Column("_business_date", sa.Date(), nullable=False), schema="raw",
)  # fmt: skip


def create_raw_tables(session: Session) -> None:
    """The ``raw`` tables (one per contract, and the coverage), when missing; a table an older
    release made gains the fields its contract added since, its rows holding their defaults."""
    session.create(COVERAGE, *(raw_table(e) for e in ENTITIES))
    for entity, contract in ENTITIES.items():
        defaults = {name: field.default for name, field in contract.model_fields.items() if not field.is_required()}
        session.add_missing_columns(raw_table(entity), defaults)


def _days(span: tuple[dt.date, dt.date]) -> list[dt.date]:
    return [span[0] + dt.timedelta(days=i) for i in range((span[1] - span[0]).days + 1)]


def covered_days(session: Session, entity: str, first: dt.date, last: dt.date) -> dict[dt.date, dt.date]:
    """The days between ``first`` and ``last`` whose ``entity`` records ``raw`` holds, each with the
    business date of the run that last loaded it."""
    c = COVERAGE.c
    found = session.rows(sa.select(c.day, c._business_date).where(c.entity == entity, c.day.between(first, last)))
    return {as_date(day): as_date(loaded_by) for day, loaded_by in found}


def holds_snapshot(session: Session, entity: str, day: dt.date) -> bool:
    """Whether ``raw`` holds ``entity``'s snapshot of ``day``."""
    table = raw_table(entity)
    return session.scalar(sa.select(sa.literal(1)).where(table.c._business_date == day).limit(1)) is not None


def _carry(entity: str, columns: list[str], business_date: dt.date) -> sa.Insert:
    """Copy the previous day's records of a snapshot that the day's delta (already inserted) did not
    replace, as the day's."""
    table, key = raw_table(entity), PRIMARY_KEYS[entity]
    previous, day = table.alias("p"), table.alias("d")
    replaced = sa.select(sa.literal(1)).where(day.c._business_date == business_date, day.c[key] == previous.c[key])
    rows = sa.select(*(previous.c[c] for c in columns), sa.literal(business_date, sa.Date()).label("_business_date"))
    rows = rows.where(previous.c._business_date == business_date - dt.timedelta(days=1), ~sa.exists(replaced))
    return sa.insert(table).from_select([*columns, "_business_date"], rows)


def _missing_base(entity: str, business_date: dt.date) -> RuntimeError:
    previous = business_date - dt.timedelta(days=1)
    return RuntimeError(
        f"{entity} for {business_date} landed as the changes of the day, but raw holds no {entity} for "
        f"{previous} to carry the rest from (removed since the plan?): rerun the day, whose plan will "
        "then extract the whole snapshot"
    )


def _loaded_later(
    session: Session, entity: str, span: tuple[dt.date, dt.date], business_date: dt.date
) -> dt.date | None:
    """The first day of ``span`` that a run of a later business date has loaded (None: none has):
    a backfill of an older date, or dates loaded out of order. That run read those days later,
    knowing at least as much, and its coverage says when they became final (decision 0029): a
    load of an earlier date leaves them, from that day on (the days a later run reads are the
    span's last), as they are."""
    c = COVERAGE.c
    first = session.scalar(
        sa.select(sa.func.min(c.day)).where(c.entity == entity, c.day.between(*span), c._business_date > business_date)
    )
    return None if first is None else as_date(first)


def load_business_date(
    business_date: dt.date, settings: Settings, entities: Sequence[str] = tuple(ENTITIES)
) -> dict[str, int]:
    """Load the ``entities`` (all by default) landed for ``business_date`` into the warehouse, in
    one transaction; rows per table. The feature backfill of model training loads only the snapshots."""
    paths = _landed(business_date, settings, entities)
    counts: dict[str, int] = {}
    with warehouse(settings).begin() as session:
        create_raw_tables(session)
        for entity, files in paths.items():
            table = raw_table(entity)
            span = landed_window(entity, business_date, settings)
            later = None
            if span is None:
                session.execute(sa.delete(table).where(table.c._business_date == business_date))
            else:
                later = _loaded_later(session, entity, span, business_date)
                own = span if later is None else (span[0], later - dt.timedelta(days=1))
                if own[0] <= own[1]:
                    session.execute(sa.delete(table).where(table.c[WINDOW_COLUMN[entity]].between(*own)))
                    c = COVERAGE.c
                    session.execute(sa.delete(COVERAGE).where(c.entity == entity, c.day.between(*own)))
                    session.execute(sa.insert(COVERAGE), [{"entity": entity, "day": d, "_business_date": business_date}
                                                          for d in _days(own)])  # fmt: skip
            schema = pq.read_schema(files[0])
            counts[entity] = session.insert_parquet(table, files, {"_business_date": business_date}, BATCH_ROWS)
            if later is not None:  # what a later date's run holds stays as it read it
                theirs = sa.and_(table.c._business_date == business_date, table.c[WINDOW_COLUMN[entity]] >= later)
                counts[entity] -= session.execute(sa.delete(table).where(theirs))
            # statistics with the day's rows in them before any statement reads them: without, a
            # server plans the carry below for a day of no rows (a nested anti join over every
            # customer or account, which ran for over ten minutes on 100,000 customers)
            session.analyze(table)
            if span is None and landed_since(entity, business_date, settings) is not None:
                # the day's changes: the rest of the snapshot is the previous day's, unchanged
                if not holds_snapshot(session, entity, business_date - dt.timedelta(days=1)):
                    raise _missing_base(entity, business_date)
                session.execute(_carry(entity, schema.names, business_date))
                session.analyze(table)
    log.info("loaded raw tables for %s: %s", business_date, counts)
    return counts
