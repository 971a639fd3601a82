"""Retention of clear personal data (Ley 29733): names, document numbers and dates of birth stay in
``raw.customers``, the customers' landing partitions and the quarantine's raw payloads for
``CRM_RAW_RETENTION_DAYS`` (35) days, then go. The marts keep their history: they hold no clear
personal data (staging masks it, and no mart holds a date of birth).

A business date older than the window can still be rerun or backfilled: its extraction brings the
data again from the integration API.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import structlog

from crm.settings import Settings
from crm.warehouse import warehouse

log = structlog.get_logger(__name__)
PARTITION = re.compile(r"business_date=(\d{4}-\d{2}-\d{2})")
# the landed entities that carry clear personal data; the quarantine keeps every entity's raw records
PERSONAL_ENTITIES = ("customers",)


def _old_partitions(root: Path, entities: tuple[str, ...] | None, cutoff: dt.date) -> list[Path]:
    if not root.exists():
        return []
    found = []
    for entity_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if entities is not None and entity_dir.name not in entities:
            continue
        for part in sorted(entity_dir.iterdir()):
            m = PARTITION.fullmatch(part.name)
            if m and dt.date.fromisoformat(m[1]) < cutoff:
                found.append(part)
    return found


def purge_personal_data(business_date: dt.date, settings: Settings) -> dict:
    """Delete the clear personal data of business dates before ``business_date`` minus the
    retention window; what was removed, by count."""
    cutoff = business_date - dt.timedelta(days=settings.extraction.raw_retention_days)
    from ingestion.raw_load import raw_table

    rows = warehouse(settings).delete_before(raw_table("customers"), "_business_date", cutoff)
    landing = _old_partitions(settings.landing_dir, PERSONAL_ENTITIES, cutoff)
    quarantine = _old_partitions(settings.quarantine_dir, None, cutoff)
    for part in [*landing, *quarantine]:
        shutil.rmtree(part)
    removed = {
        "business_date": business_date.isoformat(),
        "kept_from": cutoff.isoformat(),
        "raw_customer_rows": int(rows),
        "landing_partitions": len(landing),
        "quarantine_partitions": len(quarantine),
    }
    log.info("purged clear personal data older than the retention window", **removed)
    return removed
