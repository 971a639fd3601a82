"""The landing zone: where each extraction job's records land, and what a landed partition holds.

``<CRM_HOME>/landing/<entity>/business_date=<D>/data.parquet`` (or one ``data-<first day>.parquet``
per slice of a history load), with its quarantine in the same layout under ``quarantine/``. Beside
a windowed entity's partition, ``window.json`` says which days it holds; beside a snapshot of
changes only, ``delta.json`` since when. An extraction works in the partition's ``_staging*``
folder and replaces the landed file atomically. The extraction writes here, the landing gate and
the raw load read from here.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import typing
from pathlib import Path

import pyarrow.parquet as pq

from crm.settings import Settings
from ingestion.plan import window
from models.core_banking import ENTITIES

if typing.TYPE_CHECKING:
    from ingestion.plan import ExtractionJob


def window_file(path: Path) -> Path:
    """Beside a landed partition: the date range it holds (a windowed entity's)."""
    return path.with_name("window.json")


def delta_file(path: Path) -> Path:
    """Beside a landed snapshot partition that holds only the records changed since a date."""
    return path.with_name("delta.json")


def landed_since(entity: str, business_date: dt.date, settings: Settings) -> dt.date | None:
    """When the landed snapshot of ``entity`` for ``business_date`` is a delta: the records changed
    on or after this date (the rest are the previous day's); None for a full snapshot."""
    sidecar = delta_file(partition_path(settings.landing_dir, entity, business_date))
    if window(entity, business_date, settings) is not None or not sidecar.exists():
        return None
    return dt.date.fromisoformat(json.loads(sidecar.read_text())["since"])


def landed_window(entity: str, business_date: dt.date, settings: Settings) -> tuple[dt.date, dt.date] | None:
    """The date range the landed partition of ``entity`` for ``business_date`` holds (None: a
    snapshot); a partition landed before deltas holds the whole feature window."""
    if window(entity, business_date, settings) is None:
        return None
    sidecar = window_file(partition_path(settings.landing_dir, entity, business_date))
    if not sidecar.exists():
        return window(entity, business_date, settings)
    first, last = json.loads(sidecar.read_text())
    return dt.date.fromisoformat(first), dt.date.fromisoformat(last)


def partition_path(root: Path, entity: str, business_date: dt.date, part: dt.date | None = None) -> Path:
    """A landed (or quarantined) file: ``data.parquet`` when one extraction lands the partition
    whole, ``data-<first day>.parquet`` for each slice of a history load extracted in slices."""
    name = "data.parquet" if part is None else f"data-{part.isoformat()}.parquet"
    return root / entity / f"business_date={business_date.isoformat()}" / name


def partition_files(root: Path, entity: str, business_date: dt.date) -> list[Path]:
    """Every file of a landed (or quarantined) partition: one, or one per slice."""
    return sorted(partition_path(root, entity, business_date).parent.glob("data*.parquet"))


def landed_rows(root: Path, entity: str, business_date: dt.date) -> int | None:
    """Rows of a partition, from its files' footers (None: nothing landed)."""
    files = partition_files(root, entity, business_date)
    return sum(pq.read_metadata(f).num_rows for f in files) if files else None


def job_file(job: ExtractionJob, business_date: dt.date, root: Path) -> Path:
    """The file an extraction job lands."""
    return partition_path(root, job.entity, business_date, job.part)


def prepare_partitions(jobs: list[ExtractionJob], business_date: dt.date, settings: Settings) -> list[Path]:
    """Remove from the date's landing and quarantine what an earlier plan of the same date left
    there and this one does not make (a history load's slices before a rerun that extracts only
    the delta, or slices cut differently): a partition holds what this run's plan extracts, no
    more. Interrupted work of this plan's own jobs stays, to resume from. The paths removed."""
    removed = []
    for root in (settings.landing_dir, settings.quarantine_dir):
        wanted = {job_file(job, business_date, root) for job in jobs}
        for entity in ENTITIES:
            folder = partition_path(root, entity, business_date).parent
            for stale in sorted(folder.glob("data*.parquet")):
                if stale not in wanted:
                    stale.unlink()
                    removed.append(stale)
            for staging in sorted(folder.glob("_staging*")):
                if staging.is_dir() and not any(staging_dir(p) == staging for p in wanted):
                    shutil.rmtree(staging, ignore_errors=True)
                    removed.append(staging)
    return removed


def staging_dir(path: Path) -> Path:
    """Where the extraction of ``path`` keeps its work in progress (one per slice: slices of the
    same partition may be extracted at once, on different workers)."""
    return path.parent / ("_staging" if path.name == "data.parquet" else f"_staging-{path.stem}")
