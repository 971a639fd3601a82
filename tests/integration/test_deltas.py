"""Deltas, not windows (issue 15): the daily extraction fetches what ``raw`` does not hold yet. After
N daily deltas ``raw`` holds exactly what one full load of the same dates gives, a gap is filled by a
history load the plan detects itself, and a rerun changes nothing. The planned runs go through the
DAG's own jobs: a history load extracted and gated in slices of about ``CRM_EXTRACT_SLICE_RECORDS``."""

from __future__ import annotations

import datetime as dt

import pytest

from crm.warehouse import warehouse
from expectations.runner import gate_landing
from ingestion.extract import extract_entity, extract_job
from ingestion.landing import partition_files, prepare_partitions
from ingestion.plan import extraction_jobs
from ingestion.raw_load import load_business_date
from models.core_banking import ENTITIES, PRIMARY_KEYS

FIRST = dt.date(2026, 10, 20)  # a Tuesday: no weekly full snapshot among the four days
DATES = [FIRST + dt.timedelta(days=i) for i in range(4)]
GAP_DATE = DATES[-1] + dt.timedelta(days=8)  # six days never run in between


def _home(settings, name):
    s = settings.replace(
        home=settings.home / name,
        customers=300,
        seed=9,
        transaction_lookback_days=45,
        response_lookback_days=60,
        slice_records=1000,  # about 10,000 transactions of 45 days: about ten slices
    )
    s.ensure_dirs()
    return s


def _run(day: dt.date, s, planned: bool) -> dict:
    """One day's extraction and load as crm_daily runs it (planned: its jobs, each extracted and
    gated) or as a full load of every entity's feature window."""
    received: dict = {}
    if planned:
        jobs = extraction_jobs(day, s)
        prepare_partitions(jobs, day, s)
        for job in jobs:
            done = extract_job(job, day, s)
            received[job.entity] = received.get(job.entity, 0) + done.received
            received[f"{job.entity}_reported"] = received.get(f"{job.entity}_reported", 0) + done.reported
        for job in jobs:
            assert gate_landing(job.entity, day, s, job.chunk), job.label
        plan = {}
        for job in (
            j.as_xcom() for j in jobs
        ):  # the plan as the jobs carry it: a windowed entity's span, a snapshot's since
            plan[job["entity"]] = job["span"] or ({"since": job["since"]} if job["since"] else None)
        received["slices"] = {e: sum(j.entity == e for j in jobs) for e in ENTITIES}
    else:
        plan = {}
        for entity in ENTITIES:
            received[entity] = extract_entity(entity, day, s).received
    return {"plan": plan, "loaded": load_business_date(day, s), **received}


def _raw(s) -> dict[str, list[tuple]]:
    """Every raw row: snapshots with the business date they are for, windowed entities without the
    date of the load that last replaced their day (deltas and full loads differ there, by design)."""
    out = {}
    for entity in ENTITIES:
        df = warehouse(s).frame(f"select * from raw.{entity}")
        if entity in ("transactions", "campaign_responses"):
            df = df.drop(columns="_business_date")
        out[entity] = sorted(df.itertuples(index=False, name=None))
    return out


@pytest.fixture(scope="module")
def runs(settings):
    deltas, full = _home(settings, "deltas"), _home(settings, "full")
    done = {"delta": [_run(d, deltas, True) for d in DATES], "full": [_run(d, full, False) for d in DATES]}
    return deltas, full, done


def test_the_first_run_loads_the_history_then_each_day_its_delta(runs):
    _, _, done = runs
    first, *later = done["delta"]
    assert first["plan"]["transactions"] == [(FIRST - dt.timedelta(days=44)).isoformat(), FIRST.isoformat()]
    assert first["plan"]["campaign_responses"][0] == (FIRST - dt.timedelta(days=59)).isoformat()
    assert first["plan"]["customers"] is None  # no snapshot of the day before: the whole one
    # the history load in slices of about 1,000 records (by the API's count), each landed in a file
    # of its own; the responses of 60 days (a few hundred) and a day's delta in one
    assert first["slices"] == {"customers": 1, "accounts": 1, "campaign_responses": 1,
                               "transactions": -(-first["transactions_reported"] // 1000)}  # fmt: skip
    assert first["slices"]["transactions"] >= 5
    assert len(partition_files(runs[0].landing_dir, "transactions", FIRST)) == first["slices"]["transactions"]
    assert all(run["slices"] == dict.fromkeys(ENTITIES, 1) for run in later)
    for day, run in zip(DATES[1:], later, strict=True):
        for entity in ("transactions", "campaign_responses"):
            assert run["plan"][entity] == [(day - dt.timedelta(days=3)).isoformat(), day.isoformat()]
        # customers and accounts: the records changed on the day, the rest carried in raw
        assert run["plan"]["customers"] == run["plan"]["accounts"] == {"since": day.isoformat()}
        assert run["customers"] < done["full"][0]["customers"] / 10
    # the daily delta moves about 4 days of transactions, not 45
    full_day = done["full"][-1]["transactions"]
    assert 0 < later[-1]["transactions"] <= full_day * 5 / 45


def test_raw_after_daily_deltas_equals_raw_after_full_loads(runs):
    deltas, full, _ = runs
    got, expected = _raw(deltas), _raw(full)
    for entity in ENTITIES:
        assert len(got[entity]) == len(expected[entity]) > 0, entity
        assert got[entity] == expected[entity], entity


def _coverage(s) -> dict[str, dict[dt.date, dt.date]]:
    from ingestion.raw_load import covered_days

    with warehouse(s).connect() as session:
        return {e: covered_days(session, e, dt.date(2000, 1, 1), dt.date(2100, 1, 1))
                for e in ("transactions", "campaign_responses")}  # fmt: skip


def _loaded_by(s) -> dict[str, list[tuple]]:
    """Each windowed record with the business date of the load that holds it."""
    return {e: sorted(warehouse(s).rows(f"select {PRIMARY_KEYS[e]}, _business_date from raw.{e}"))
            for e in ("transactions", "campaign_responses")}  # fmt: skip


def test_a_rerun_changes_nothing_and_a_gap_is_loaded_by_history(runs):
    deltas, full, _ = runs
    before, read, holders = _raw(deltas), _coverage(deltas), _loaded_by(deltas)
    again = _run(DATES[1], deltas, True)  # a rerun (clear, backfill) of an earlier date: its delta again
    assert again["plan"]["transactions"][0] == (DATES[1] - dt.timedelta(days=3)).isoformat()
    assert _raw(deltas) == before
    # of its 4 days, the 3 that later runs read stay theirs: it counts what it kept, not what it landed
    kept = warehouse(deltas).scalar("select count(*) from raw.transactions where _business_date = :d", {"d": DATES[1]})
    assert 0 < again["loaded"]["transactions"] == kept < again["transactions"]
    # the first date again: raw now holds its history, so its plan is a delta, and the history
    # load's slices landed by the first run are gone from its landing (load_raw reads them all)
    sliced = partition_files(deltas.landing_dir, "transactions", FIRST)
    assert len(sliced) >= 5
    again = _run(FIRST, deltas, True)
    assert again["slices"]["transactions"] == 1
    assert [p.name for p in partition_files(deltas.landing_dir, "transactions", FIRST)] == ["data.parquet"]
    assert _raw(deltas) == before
    # the reruns of earlier dates leave the days later runs read as those runs read them: when each
    # day was read for the last time (decision 0029) does not go back to an earlier date
    assert _coverage(deltas) == read and _loaded_by(deltas) == holders
    after_gap = _run(GAP_DATE, deltas, True)
    # the days after the last run are missing; the last run's last 3 days (all but its first) were
    # never read for the last time by the runs that did not happen: read from the first of them
    never_final = DATES[-1] - dt.timedelta(days=2)
    assert after_gap["plan"]["transactions"] == [never_final.isoformat(), GAP_DATE.isoformat()]
    assert after_gap["plan"]["customers"] is None  # the day before is missing: the whole snapshot
    _run(GAP_DATE, full, False)
    got, expected = _raw(deltas), _raw(full)
    for entity in ENTITIES:
        assert got[entity] == expected[entity], entity


def test_the_landing_gate_passes_a_day_s_delta_beside_yesterday_s_history(runs):
    """The second day's landing is a delta: its volume is compared per day with the history load
    landed the day before, and a day of snapshot changes is not compared with a whole snapshot."""
    from expectations.runner import gate_landing

    deltas, _, _ = runs
    for entity in ENTITIES:
        assert gate_landing(entity, DATES[1], deltas), entity
