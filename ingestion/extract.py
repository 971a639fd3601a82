"""Extract one entity for one business date from the integration API into the landing zone.

Each record is checked against its contract (:mod:`models.core_banking`); what breaks it goes to
the quarantine with the page, field and reason, and the run fails when the quarantined share
passes ``CRM_MAX_QUARANTINE_SHARE``.

Pages are fetched one ahead of the page being checked (a bounded queue), and each checked page is
written to a part file in the partition's staging folder before a checkpoint records the cursor
after it: an extraction killed half-way resumes from its checkpoint without fetching again what it
already landed. At the end the parts are deduplicated by primary key (DuckDB, bounded memory) into
``<CRM_HOME>/landing/<entity>/business_date=<D>/data.parquet``, written atomically and replaced whole
by a rerun, and the result is reconciled with the API's control total: landed plus quarantined
must equal what the API reports, or the run fails naming the entity and the numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import shutil
import threading
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from crm.integration_api import client_for
from crm.settings import Settings
from ingestion.contract import arrow_schema, checker
from ingestion.landing import delta_file, partition_path, staging_dir, window_file
from ingestion.plan import ENDPOINTS, ExtractionJob, window
from models.core_banking import ENTITIES, PRIMARY_KEYS

log = logging.getLogger(__name__)


class QuarantineLimitExceeded(RuntimeError):
    pass


class ReconciliationError(RuntimeError):
    pass


@dataclass(frozen=True)
class ExtractResult:
    entity: str
    business_date: str
    reported: int  # the API's control total
    received: int  # records read, duplicates included
    landed: int
    quarantined: int
    duplicates: int
    pages: int
    resumed_from_page: int  # 0: a fresh extraction
    path: str


def extract_job(job: ExtractionJob, business_date: dt.date, settings: Settings) -> ExtractResult:
    """Run one job of the plan (what a mapped ``extract`` task of ``crm_daily`` does)."""
    return extract_entity(job.entity, business_date, settings, job.span, job.since, job.chunk)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_atomically(table: pa.Table, path: Path) -> None:
    """A part file: scratch that the dedup reads once, so written for speed (lz4, no dictionary: a
    page's file about 1.8 times as big); the landed file is zstd. Statistics stay: DuckDB reads a
    column's NOT NULL from them, and the landed file (and the SQL Server table made from its
    schema) would lose it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="lz4", use_dictionary=False)
    os.replace(tmp, path)


def _quarantine_entry(
    entity: str, business_date: dt.date, page_no: int, key: str, raw: object, exc: ValidationError
) -> dict:
    """What the quarantine keeps of a record that broke its contract: where, which field, why, and the record."""
    err = exc.errors()[0]
    return {
        "entity": entity,
        "business_date": business_date,
        "page": page_no,
        "record_key": str(raw.get(key)) if isinstance(raw, dict) else None,
        "field": ".".join(str(p) for p in err["loc"]) or None,
        "error_type": err["type"],
        "reason": err["msg"],
        "raw_payload": json.dumps(raw, default=str),
    }


QUARANTINE_SCHEMA = pa.schema(
    [
        ("entity", pa.string()),
        ("business_date", pa.date32()),
        ("page", pa.int64()),
        ("record_key", pa.string()),
        ("field", pa.string()),
        ("error_type", pa.string()),
        ("reason", pa.string()),
        ("raw_payload", pa.string()),
    ]
)


class _Staging:
    """A partition's work in progress: one part file per checked page (records, quarantined
    records) and a checkpoint naming the cursor after the last page written."""

    def __init__(self, path: Path, request: dict):
        self.dir = staging_dir(path)
        self.request = request
        self.checkpoint_path = self.dir / "checkpoint.json"

    def resume(self) -> dict:
        """The checkpoint of an interrupted extraction of the same request, else a fresh start."""
        if self.checkpoint_path.exists():
            state = json.loads(self.checkpoint_path.read_text())
            if state["request"] == self.request:
                return state
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return {"request": self.request, "cursor": None, "pages": 0, "received": 0, "done": False}

    def write_page(self, page_no: int, rows: pa.Table, bad: pa.Table, state: dict) -> None:
        for name, table in (("part", rows), ("quarantine", bad)):
            if table.num_rows:
                _write_atomically(table, self.dir / f"{name}-{page_no:07d}.parquet")
        tmp = self.checkpoint_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.checkpoint_path)  # the page is landed once the checkpoint says so

    def parts(self, name: str) -> list[Path]:
        return sorted(self.dir.glob(f"{name}-*.parquet"))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _prefetch(pages: typing.Iterator[tuple[list[dict], str | None]], depth: int = 2) -> typing.Iterator:
    """Fetch pages on a thread, at most ``depth`` ahead of the consumer (bounded memory)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def fetch() -> None:
        try:
            for item in pages:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=fetch, name="extract-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)


def _dedup_into(
    parts: list[Path], key: str, target: Path, schema: pa.Schema, memory_mb: int = 256, spill: Path | None = None
) -> int:
    """Union of ``parts`` with one row per ``key`` (the earliest page's), written atomically to
    ``target``; rows out.

    Duplicates are rare, so the keys seen more than once are found first (an aggregate over the
    key column only), then the rows stream through: every row whose key is not duplicated, and the
    first of each duplicated key. Memory is DuckDB's aggregate of keys, not the rows, held under
    ``memory_mb`` (``CRM_EXTRACT_MEMORY_MB``): past it DuckDB spills to disk. The bound must leave
    room for the blocks a spill itself pins: at 24 MB the aggregate of 7,000,000 keys failed
    instead of spilling (issue 15).
    """
    from crm.warehouse import scratch_duckdb

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    if not parts:
        pq.write_table(schema.empty_table(), tmp, compression="zstd")
        os.replace(tmp, target)
        return 0
    spill = spill or target.parent / "_staging" / "duckdb-spill"
    with scratch_duckdb(memory_mb, spill) as con:
        files = ", ".join("'{}'".format(str(p).replace("'", "''")) for p in parts)
        con.execute(
            f"create view parts as select * from read_parquet([{files}], filename = true, hive_partitioning = false)"
        )
        con.execute(f'create temp table dup as select "{key}" from parts group by "{key}" having count(*) > 1')
        con.execute(
            f"""copy (
                  select * exclude (filename) from parts anti join dup using ("{key}")
                  union all
                  select * exclude (filename, _n) from (
                    select *, row_number() over (partition by "{key}" order by filename) as _n
                    from parts semi join dup using ("{key}")
                  ) where _n = 1
                ) to '{tmp}' (format parquet, compression zstd)"""
        )
        rows = con.execute(f"select count(*) from read_parquet('{tmp}')").fetchone()[0]
    os.replace(tmp, target)
    return int(rows)


def _slice_name(chunk: tuple[dt.date, dt.date] | None) -> str:
    return f" (slice {chunk[0]}..{chunk[1]})" if chunk else ""


def extract_entity(
    entity: str,
    business_date: dt.date,
    settings: Settings,
    span: tuple[dt.date, dt.date] | None = None,
    since: dt.date | None = None,
    chunk: tuple[dt.date, dt.date] | None = None,
) -> ExtractResult:
    """Extract ``entity`` for ``business_date`` (resuming an interrupted run of the same request):
    a windowed entity's ``span`` of days (as ``plan_window`` chose it; its whole feature window when
    not given), or of it only the slice ``chunk`` (one of a history load's slices, landed in a file
    of its own beside the others); a snapshot as of the date (with ``since``: only the records
    changed on or after it). Reconciled with the API's control total of the request it made."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {sorted(ENTITIES)}")
    _ = settings.core_api  # where to extract from, resolved (or refused) before the landing area is touched
    model, key = ENTITIES[entity], PRIMARY_KEYS[entity]
    if span is None or window(entity, business_date, settings) is None:
        span = window(entity, business_date, settings)
    if span is not None:
        since = None
        if chunk is not None and not (span[0] <= chunk[0] <= chunk[1] <= span[1]):
            raise ValueError(
                f"{entity} for {business_date}: slice {chunk[0]}..{chunk[1]} is not within {span[0]}..{span[1]}"
            )
        chunk = None if chunk == span else chunk
    else:
        chunk = None
    request = chunk or span
    params = (
        {"as_of": business_date.isoformat(), **({"updated_since": since.isoformat()} if since else {})}
        if request is None
        else {"date_from": request[0].isoformat(), "date_to": request[1].isoformat()}
    )
    schema = arrow_schema(model)
    check = checker(model)  # screened on arrow; pydantic decides what the screen does not pass
    part = chunk[0] if chunk else None
    path = partition_path(settings.landing_dir, entity, business_date, part)
    qpath = partition_path(settings.quarantine_dir, entity, business_date, part)
    staging = _Staging(path, {"entity": entity, "params": params, "page_size": settings.extraction.page_size})
    state = staging.resume()
    resumed_from = state["pages"]
    if resumed_from:
        log.info("%s for %s: resuming after page %d", entity, business_date, resumed_from)
    with client_for(settings) as client:
        reported = client.control_total(ENDPOINTS[entity], params)
        if not state["done"]:
            pages = client.pages_from(ENDPOINTS[entity], params, settings.extraction.page_size, state["cursor"])
            for page, next_cursor in _prefetch(pages):
                page_no = state["pages"]
                checked = check(page)
                bad = [_quarantine_entry(entity, business_date, page_no, key, raw, exc) for raw, exc in checked.broken]
                state.update(
                    cursor=next_cursor, pages=page_no + 1, received=state["received"] + len(page), done=not next_cursor
                )
                staging.write_page(
                    page_no,
                    checked.landed,
                    pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA),
                    state,
                )
    memory_mb = settings.extraction.memory_mb
    # first, so that a landed partition never goes without what it holds (every slice of a
    # history load writes the same: the whole span, which load_raw replaces)
    path.parent.mkdir(parents=True, exist_ok=True)
    if span is not None:
        _write_text_atomically(window_file(path), json.dumps([span[0].isoformat(), span[1].isoformat()]))
    elif since is not None:
        _write_text_atomically(delta_file(path), json.dumps({"since": since.isoformat()}))
    else:
        delta_file(path).unlink(missing_ok=True)
    if chunk is None:  # landed whole: no slice of an earlier extraction of the date stays beside it
        for root in (settings.landing_dir, settings.quarantine_dir):
            for stale in partition_path(root, entity, business_date).parent.glob("data-*.parquet"):
                stale.unlink()
    spill = staging.dir / "duckdb-spill"
    landed = _dedup_into(staging.parts("part"), key, path, schema, memory_mb, spill)
    quarantined = _dedup_into(staging.parts("quarantine"), "record_key", qpath, QUARANTINE_SCHEMA, memory_mb, spill)
    if not quarantined:
        qpath.unlink(missing_ok=True)
    staging.clear()
    received = state["received"]
    result = ExtractResult(
        entity=entity,
        business_date=business_date.isoformat(),
        reported=reported,
        received=received,
        landed=landed,
        quarantined=quarantined,
        duplicates=received - landed - quarantined,
        pages=state["pages"],
        resumed_from_page=resumed_from,
        path=str(path),
    )
    log.info("extracted %s", json.dumps(asdict(result)))
    if landed + quarantined != reported:
        raise ReconciliationError(
            f"{entity} for {business_date}{_slice_name(chunk)} does not reconcile: the API reports {reported} records, "
            f"{landed} landed + {quarantined} quarantined = {landed + quarantined} "
            f"({received} received, {result.duplicates} duplicates dropped)"
        )
    if received and quarantined / reported > settings.extraction.max_quarantine_share:
        first = pq.read_table(qpath).slice(0, 1).to_pylist()[0]
        raise QuarantineLimitExceeded(
            f"{entity} for {business_date}{_slice_name(chunk)}: {quarantined} of {reported} records broke the contract "
            f"({quarantined / reported:.1%} > CRM_MAX_QUARANTINE_SHARE={settings.extraction.max_quarantine_share:.1%}); "
            f"first: field {first['field']!r} of record {first['record_key']}: {first['reason']}; "
            f"all of them are in {qpath}"
        )
    return result
