"""Extract one entity for one business date from the integration API into the landing zone.

Each record is checked against its contract (:mod:`models.core_banking`); what breaks it goes to
the quarantine with the page, field and reason, and the run fails when the quarantined share
passes ``CRM_MAX_QUARANTINE_SHARE``. The landing partition
``<CRM_HOME>/landing/<entity>/business_date=<D>/data.parquet`` is written atomically and replaced
whole by a rerun.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import typing
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from crm.services import ensure_sandbox
from crm.settings import Settings, get_settings
from ingestion.client import IntegrationApiClient
from models.core_banking import ENTITIES, PRIMARY_KEYS

log = logging.getLogger(__name__)

ENDPOINTS = {
    "customers": "/v1/customers",
    "accounts": "/v1/accounts",
    "transactions": "/v1/transactions",
    "campaign_responses": "/v1/campaign-responses",
}


class QuarantineLimitExceeded(RuntimeError):
    pass


@dataclass(frozen=True)
class ExtractResult:
    entity: str
    business_date: str
    received: int
    landed: int
    quarantined: int
    pages: int
    path: str


def window(entity: str, business_date: dt.date, settings: Settings) -> tuple[dt.date, dt.date] | None:
    """The date range an entity's daily extraction covers (None: a snapshot as of the date)."""
    days = {
        "transactions": settings.transaction_lookback_days,
        "campaign_responses": settings.response_lookback_days,
    }
    if entity not in days:
        return None
    return business_date - dt.timedelta(days=days[entity] - 1), business_date


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The parquet schema of a contract."""
    fields = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        base = args[0] if args and typing.get_origin(ann) is not typing.Literal else ann
        base = typing.get_args(base)[0] if typing.get_origin(base) is typing.Annotated else base
        if typing.get_origin(base) is typing.Literal:
            arrow_type = pa.string()
        else:
            arrow_type = {
                int: pa.int64(),
                str: pa.string(),
                bool: pa.bool_(),
                dt.date: pa.date32(),
                Decimal: pa.decimal128(16, 2),
            }[base]
        fields.append(pa.field(name, arrow_type, nullable=not info.is_required()))
    return pa.schema(fields)


def partition_path(root: Path, entity: str, business_date: dt.date) -> Path:
    return root / entity / f"business_date={business_date.isoformat()}" / "data.parquet"


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
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
        "reason": err["msg"],
        "raw_payload": json.dumps(raw, default=str),
    }


def _api_client(settings: Settings) -> IntegrationApiClient:
    api = settings.core_api
    if api.url is None:
        sandbox = ensure_sandbox(settings.sandbox_customers, settings.sandbox_seed, settings)
        return IntegrationApiClient(
            sandbox.url, sandbox.client_id, sandbox.client_secret, max_retries=settings.api_max_retries
        )
    return IntegrationApiClient(api.url, api.client_id, api.client_secret, max_retries=settings.api_max_retries)


def extract_entity(entity: str, business_date: dt.date, settings: Settings | None = None) -> ExtractResult:
    settings = settings or get_settings()
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {sorted(ENTITIES)}")
    model, key = ENTITIES[entity], PRIMARY_KEYS[entity]
    span = window(entity, business_date, settings)
    params = (
        {"as_of": business_date.isoformat()}
        if span is None
        else {"date_from": span[0].isoformat(), "date_to": span[1].isoformat()}
    )
    schema = arrow_schema(model)
    path = partition_path(settings.landing_dir, entity, business_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    seen: set[object] = set()  # keys only: memory is bounded by a page, not by the bank
    bad: list[dict] = []
    received = pages = landed = 0
    try:
        with _api_client(settings) as client, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for page_no, page in enumerate(client.pages(ENDPOINTS[entity], params, settings.page_size)):
                pages += 1
                rows = []
                for raw in page:
                    received += 1
                    try:
                        record = model.model_validate(raw)
                    except ValidationError as exc:
                        bad.append(_quarantine_entry(entity, business_date, page_no, key, raw, exc))
                        continue
                    record_key = getattr(record, key)
                    if record_key in seen:
                        continue  # the same record served twice (across pages): land it once
                    seen.add(record_key)
                    rows.append(record.model_dump())
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    landed += len(rows)
        os.replace(tmp, path)  # readers see the old partition or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)
    qpath = partition_path(settings.quarantine_dir, entity, business_date)
    if bad:
        _write_atomically(pa.Table.from_pylist(bad), qpath)
    else:
        qpath.unlink(missing_ok=True)
    result = ExtractResult(entity, business_date.isoformat(), received, landed, len(bad), pages, str(path))
    log.info("extracted %s", json.dumps(asdict(result)))
    if received and len(bad) / received > settings.max_quarantine_share:
        raise QuarantineLimitExceeded(
            f"{entity} for {business_date}: {len(bad)} of {received} records broke the contract "
            f"({len(bad) / received:.1%} > CRM_MAX_QUARANTINE_SHARE={settings.max_quarantine_share:.1%}); "
            f"first: field {bad[0]['field']!r} of record {bad[0]['record_key']}: {bad[0]['reason']}; "
            f"all of them are in {qpath}"
        )
    return result
