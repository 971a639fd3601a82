"""What the warehouse benchmarks share: a sandbox bank generated straight into the raw tables, as the
daily load leaves them (no HTTP), and a timed ``dbt build`` on them."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from crm.warehouse import run_dbt

CHUNK = 100_000


def new_warehouse(
    home: Path, bank, business_date: dt.date, transaction_days: int, response_days: int
) -> dict[str, int]:
    """A new DuckDB warehouse in ``home`` with the raw and assignment tables, and the bank landed in it
    for ``business_date``; the raw tables' row counts."""
    from crm.settings import Settings
    from crm.warehouse import warehouse
    from ingestion.raw_load import create_raw_tables
    from ml.score import ASSIGNMENTS

    with warehouse(Settings(home=home)).begin() as session:
        create_raw_tables(session)
        session.create(ASSIGNMENTS)
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        return land(con, bank, business_date, transaction_days, response_days)


def _insert(con, table: str, rows: list[dict], model, business_date: dt.date) -> None:
    from ingestion.contract import arrow_schema, wire_schema

    schema = arrow_schema(model)
    arrow = pa.Table.from_pylist(rows, schema=wire_schema(schema)).cast(schema)  # noqa: F841 - read below
    con.execute(f"insert into raw.{table} by name select *, ? as _business_date from arrow", [business_date])


def land(con, bank, business_date: dt.date, transaction_days: int, response_days: int) -> dict[str, int]:
    """The raw tables of ``business_date``, as the daily load leaves them: customer and account
    snapshots of the date, transactions and contacts of the days before it."""
    from models.core_banking import Account, CampaignResponse, Customer

    days = [business_date - dt.timedelta(days=k) for k in reversed(range(transaction_days))]  # ascending
    ids = np.arange(1, bank.size + 1, dtype=np.int64)
    for chunk in np.array_split(ids, max(1, len(ids) // CHUNK)):
        _insert(con, "customers", bank.customers(chunk, business_date), Customer, business_date)
        _insert(con, "accounts", bank.accounts(chunk, business_date), Account, business_date)
        tx = bank.transaction_columns(chunk, days)
        if tx is None:
            continue
        frame = pa.table(tx)  # noqa: F841 - read below
        con.execute(
            """
            insert into raw.transactions
            select 'T' || lpad(cast(day_number as varchar), 6, '0') || lpad(cast(customer_id as varchar), 9, '0')
                       || cast("index" as varchar),
                   account_id, customer_id, date '1970-01-01' + cast(day_number as integer), type,
                   case when type = 'POS_PURCHASE' then merchant_category end,
                   cast(round(amount, 2) as decimal(14, 2)), 'PEN', ?
            from frame
            """,
            [business_date],
        )
    response_dates = [business_date - dt.timedelta(days=k) for k in range(response_days)]
    for day in response_dates:
        _insert(con, "campaign_responses", bank.campaign_responses(ids, day), CampaignResponse, business_date)
    record_coverage(con, business_date, transaction_days, response_days)
    return {
        t: con.execute(f"select count(*) from raw.{t}").fetchone()[0]
        for t in ("customers", "accounts", "transactions", "campaign_responses")
    }


def record_coverage(con, business_date: dt.date, transaction_days: int, response_days: int) -> None:
    """The days :func:`land` wrote of each windowed entity, in ``raw._coverage`` as the daily load
    records them (training reads which run last loaded a contact's day: decision 0029)."""
    for entity, count in (("transactions", transaction_days), ("campaign_responses", response_days)):
        landed = [business_date - dt.timedelta(days=k) for k in range(count)]
        if not landed:
            continue
        con.execute("delete from raw._coverage where entity = ? and day between ? and ?",
                    [entity, min(landed), max(landed)])  # fmt: skip
        con.executemany("insert into raw._coverage values (?, ?, ?)", [(entity, d, business_date) for d in landed])


def dbt_build(home: Path, business_date: dt.date) -> tuple[float, dict[str, float]]:
    """``dbt build`` for ``business_date``: wall seconds, and seconds per model."""
    start = time.perf_counter()
    done = run_dbt("build", "--exclude", "test_type:unit", duckdb_path=home / "warehouse.duckdb",
                   business_date=business_date, target="local", target_path=home / "target")  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dbt build for {business_date} failed:\n{done.stdout[-4000:]}")
    results = json.loads((home / "target" / "run_results.json").read_text())["results"]
    return seconds, {r["unique_id"].split(".")[-1]: r["execution_time"] for r in results}
