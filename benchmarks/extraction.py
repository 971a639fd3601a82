"""``make bench-extract``: how fast the extraction lands a bank, against fetching alone.

Figures, measured in the same run against the same sandbox process on this machine:

- ``records_per_s``: what the DAG extracts of a 100,000-customer bank on an ordinary day (its delta,
  decision 0013: the customers and accounts changed on the day, the transactions and campaign
  responses of the day and the 3 late-arrival days before it), extracted as the DAG does (contract
  checks, part files and checkpoints, dedup, reconciliation);
- ``raw_fetch_records_per_s``: the same pages fetched and thrown away; ``ratio``;
- ``peak_rss_mb_100k``, ``peak_rss_mb_1m``: the extracting process's peak memory when it extracts
  the whole customer snapshot of a 100,000- and of a 1,000,000-customer bank (each in a fresh
  process; the weekly full snapshot);
- ``history_records``, ``history_s``, ``peak_rss_mb_history_100k``: the history load of the
  100,000-customer bank's transactions (180 days), what the first run extracts.

Writes ``<CRM_HOME>/bench/extract.json``; works in ``<CRM_HOME>/bench/extract-home``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

from benchmarks.report import own_peak_rss_mb, report
from crm.settings import REPO_ROOT, Settings, get_settings

BUSINESS_DATE = dt.date(2026, 11, 27)
ENTITIES = ("customers", "accounts", "transactions", "campaign_responses")
AT_MOST = {"peak_rss_mb_100k": 600, "peak_rss_mb_1m": 600, "peak_rss_mb_history_100k": 600}
AT_LEAST = {"records_per_s": 50_000, "ratio": 0.5}


def bench_settings(customers: int) -> Settings:
    base = get_settings()
    return base.replace(
        home=base.home / "bench" / "extract-home",
        customers=customers,
        seed=42,
        faults="",
        page_size=5000,
    )


def daily_request(entity: str, kind: str) -> tuple[tuple[dt.date, dt.date] | None, dt.date | None]:
    """(span, since) of ``entity``'s extraction: the DAG's daily delta (``daily``), the whole
    snapshot (``snapshot``) or the history load (``history``: the whole feature window)."""
    if kind == "history":
        return None, None
    if entity in ("transactions", "campaign_responses"):
        return (BUSINESS_DATE - dt.timedelta(days=3), BUSINESS_DATE), None
    return None, (BUSINESS_DATE if kind == "daily" else None)


def _warm_up() -> None:
    """Imports and first-call set-up happen once per process (an Airflow task pays them at start):
    done before the clock starts, so the figures are throughput."""
    import duckdb
    import pyarrow as pa

    import ingestion.extract  # noqa: F401

    pa.array([dt.date(2026, 1, 1)])
    duckdb.sql("select 1").fetchall()


def extract(customers: int, entities: tuple[str, ...], kind: str = "daily") -> dict:
    from ingestion.extract import extract_entity

    _warm_up()
    settings = bench_settings(customers)
    shutil.rmtree(settings.landing_dir, ignore_errors=True)  # a fresh extraction, never a resumed one
    settings.ensure_dirs()
    start = time.perf_counter()
    received = sum(extract_entity(e, BUSINESS_DATE, settings, *daily_request(e, kind)).received for e in entities)
    seconds = time.perf_counter() - start
    return {
        "records": received,
        "seconds": seconds,
        "peak_rss_mb": own_peak_rss_mb(),
    }


def raw_fetch(customers: int, entities: tuple[str, ...], kind: str = "daily") -> dict:
    from crm.integration_api import client_for
    from ingestion.plan import ENDPOINTS

    _warm_up()
    settings = bench_settings(customers)
    start = time.perf_counter()
    records = 0
    with client_for(settings) as client:
        for entity in entities:
            span, since = daily_request(entity, kind)
            params = (
                {"as_of": BUSINESS_DATE.isoformat(), **({"updated_since": since.isoformat()} if since else {})}
                if span is None
                else {"date_from": span[0].isoformat(), "date_to": span[1].isoformat()}
            )
            for page in client.pages(ENDPOINTS[entity], params, settings.extraction.page_size):
                records += len(page)
    return {"records": records, "seconds": time.perf_counter() - start}


def _in_process(kind: str, customers: int, entities: tuple[str, ...], request: str = "daily") -> dict:
    """Run one measurement in a fresh interpreter (its peak memory is its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.extraction", "--measure", kind, "--customers", str(customers),
         "--entities", ",".join(entities), "--request", request],
        cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(customers: int) -> dict:
    from crm.services import ensure_sandbox, stop_sandbox

    figures: dict = {"customers": customers}
    try:
        for size in (customers, 1_000_000):
            s = bench_settings(size)
            s.ensure_dirs()
            print(f"starting a sandbox bank of {size:,} customers ...", flush=True)
            ensure_sandbox(size, s.sandbox.seed, s, "")
            if size == customers:
                print(
                    "raw fetch of a day's delta (customers and accounts changed, 4 days of transactions and responses) ...",
                    flush=True,
                )
                fetched = _in_process("fetch", size, ENTITIES)
                print("extraction of the same ...", flush=True)
                done = _in_process("extract", size, ENTITIES)
                figures.update(
                    records=done["records"],
                    extract_s=round(done["seconds"], 2),
                    records_per_s=round(done["records"] / done["seconds"]),
                    raw_fetch_records_per_s=round(fetched["records"] / fetched["seconds"]),
                )
                figures["ratio"] = round(figures["records_per_s"] / figures["raw_fetch_records_per_s"], 3)
                print("history load of the transactions (180 days) ...", flush=True)
                history = _in_process("extract", size, ("transactions",), "history")
                figures.update(history_records=history["records"], history_s=round(history["seconds"], 1))
                if size == 100_000:
                    figures["peak_rss_mb_history_100k"] = round(history["peak_rss_mb"], 1)
            print(f"extraction of the customers of {size:,} (peak memory) ...", flush=True)
            label = "100k" if size == 100_000 else ("1m" if size == 1_000_000 else str(size))
            whole = _in_process("extract", size, ("customers",), "snapshot")
            figures[f"peak_rss_mb_{label}"] = round(whole["peak_rss_mb"], 1)
            stop_sandbox(s)
    finally:
        stop_sandbox(bench_settings(customers))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-extract", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--measure", choices=["extract", "fetch"], help=argparse.SUPPRESS)
    parser.add_argument("--entities", default=",".join(ENTITIES), help=argparse.SUPPRESS)
    parser.add_argument("--request", default="daily", choices=["daily", "snapshot", "history"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        entities = tuple(args.entities.split(","))
        result = (extract if args.measure == "extract" else raw_fetch)(args.customers, entities, args.request)
        print(json.dumps(result))
        return 0
    home = get_settings().home  # before run(): it may point CRM_HOME at its own data directory
    return report("extract", run(args.customers), AT_MOST, AT_LEAST, home)


if __name__ == "__main__":
    sys.exit(main())
