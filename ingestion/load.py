"""Load the landed partitions of one business date into the warehouse's ``raw`` schema.

Snapshots (customers, accounts) are kept per business date; windowed entities (transactions,
campaign responses) replace the rows of the dates their window covers. Everything for the date
goes in one transaction, so a reader never sees half a load and a rerun gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging

from crm.settings import Settings, get_settings
from crm.warehouse import connect
from ingestion.extract import partition_path, window
from models.core_banking import ENTITIES

log = logging.getLogger(__name__)

WINDOW_COLUMN = {"transactions": "booking_date", "campaign_responses": "contact_date"}


def load_business_date(business_date: dt.date, settings: Settings | None = None) -> dict[str, int]:
    """Load every entity landed for ``business_date``; returns the rows loaded per table."""

    settings = settings or get_settings()
    paths = {e: partition_path(settings.landing_dir, e, business_date) for e in ENTITIES}
    missing = [e for e, p in paths.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"nothing landed for {business_date} for: {', '.join(missing)}; run the extraction")
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    d = business_date.isoformat()
    with connect(settings) as con:
        con.execute("create schema if not exists raw")
        con.execute("begin transaction")
        try:
            for entity, path in paths.items():
                source = f"(select *, date '{d}' as _business_date from read_parquet('{path}'))"
                con.execute(f"create table if not exists raw.{entity} as select * from {source} limit 0")
                span = window(entity, business_date, settings)
                if span is None:
                    con.execute(
                        f"delete from raw.{entity} where _business_date = ?",
                        [business_date],
                    )
                else:
                    col = WINDOW_COLUMN[entity]
                    con.execute(
                        f"delete from raw.{entity} where {col} between ? and ?",
                        list(span),
                    )
                con.execute(f"insert into raw.{entity} by name select * from {source}")
                counts[entity] = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    log.info("loaded raw tables for %s: %s", d, counts)
    return counts
