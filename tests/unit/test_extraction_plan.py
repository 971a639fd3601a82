"""The extraction plan's arithmetic, without services: which days a date's extraction fetches
(the late-arrival delta, or the history from the first missing day), and how a windowed request is
cut into slices of whole days for the mapped ``extract`` tasks."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm.settings import Settings
from ingestion.plan import ENDPOINTS, ExtractionJob, chunks, plan_window, slices, window

D = dt.date(2026, 11, 27)


def _settings(tmp_path, **given_values) -> Settings:
    values = {"transaction_lookback_days": 180, "response_lookback_days": 365, "late_arrival_days": 3,
              "slice_records": 1000, **given_values}  # fmt: skip
    return Settings(home=tmp_path).replace(**values)


def _days(first: dt.date, last: dt.date, loaded_by: dt.date = D - dt.timedelta(days=1)) -> dict[dt.date, dt.date]:
    """The days ``first``..``last`` as ``raw._coverage`` holds them: each last loaded by the run of
    ``loaded_by`` (yesterday's, by default)."""
    return {first + dt.timedelta(days=k): loaded_by for k in range((last - first).days + 1)}


@given(
    first=st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1)),
    length=st.integers(1, 800),
    parts=st.integers(-3, 60),
)
def test_slices_of_a_span_cover_it_day_by_day_as_evenly_as_days_allow(first, length, parts):
    span = (first, first + dt.timedelta(days=length - 1))
    cut = chunks(span, parts)
    assert len(cut) == max(1, min(parts, length))
    assert cut[0][0] == span[0] and cut[-1][1] == span[1]
    for (_, last), (next_first, _) in itertools.pairwise(cut):
        assert next_first == last + dt.timedelta(days=1)  # no gap, no overlap
    sizes = [(b - a).days + 1 for a, b in cut]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_a_snapshot_entity_has_no_window_and_a_windowed_one_ends_on_the_date(tmp_path):
    settings = _settings(tmp_path)
    assert window("customers", D, settings) is None
    assert window("transactions", D, settings) == (D - dt.timedelta(days=179), D)
    assert window("campaign_responses", D, settings) == (D - dt.timedelta(days=364), D)


def test_a_warehouse_that_holds_the_history_gets_the_day_and_its_late_arrivals(tmp_path):
    settings = _settings(tmp_path)
    first, _ = window("transactions", D, settings)
    held = _days(first, D - dt.timedelta(days=1))
    assert plan_window("transactions", D, held, settings) == (D - dt.timedelta(days=3), D)


def test_an_empty_warehouse_gets_the_whole_window_and_a_gap_everything_from_its_first_day(tmp_path):
    settings = _settings(tmp_path)
    first, _ = window("transactions", D, settings)
    assert plan_window("transactions", D, {}, settings) == (first, D)
    gap = D - dt.timedelta(days=40)
    held = {d: by for d, by in _days(first, D).items() if d not in (gap, gap + dt.timedelta(days=5))}
    assert plan_window("transactions", D, held, settings) == (gap, D)
    # a missing day inside the late-arrival days is fetched anyway: no history load for it
    held = {d: by for d, by in _days(first, D).items() if d != D - dt.timedelta(days=2)}
    assert plan_window("transactions", D, held, settings) == (D - dt.timedelta(days=3), D)
    assert plan_window("customers", D, {}, settings) is None


def test_days_whose_last_reads_never_ran_are_read_again(tmp_path):
    """The runs of D - 4 and D - 3 failed, then D - 2 and D - 1 ran (each reading its day and the 3
    before it). D - 7 and D - 6 were last loaded by the run of D - 5; the runs that read them for the
    last time (D - 4, D - 3) never ran, so their late bookings were never read, and the plan starts at
    D - 7 (decision 0029: a day is final once the run 3 days after it loaded it). D - 8, loaded by
    D - 5 too, was read for the last time then."""
    settings = _settings(tmp_path)
    first, _ = window("transactions", D, settings)
    held = _days(first, D - dt.timedelta(days=1))
    for age in (8, 7, 6):
        held[D - dt.timedelta(days=age)] = D - dt.timedelta(days=5)
    assert plan_window("transactions", D, held, settings) == (D - dt.timedelta(days=7), D)
    for age in (7, 6):  # a run of D - 3 after all (a backfill): the delta as usual
        held[D - dt.timedelta(days=age)] = D - dt.timedelta(days=3)
    assert plan_window("transactions", D, held, settings) == (D - dt.timedelta(days=3), D)


def test_a_plan_becomes_one_job_per_snapshot_and_slices_of_about_the_configured_records(tmp_path):
    settings = _settings(tmp_path, slice_records=1000)
    plan = {
        "customers": None,
        "accounts": {"since": "2026-11-24"},
        "transactions": ["2026-06-01", "2026-11-27"],
        "campaign_responses": ["2026-11-24", "2026-11-27"],
    }
    asked = []

    def count(endpoint: str, params: dict) -> int:
        asked.append((endpoint, params))
        return 4500 if endpoint == ENDPOINTS["transactions"] else 10

    jobs = [job.as_xcom() for job in slices(plan, settings, count)]  # as the DAG maps them
    by_entity = {}
    for job in jobs:
        by_entity.setdefault(job["entity"], []).append(job)
    assert [j["label"] for j in by_entity["customers"]] == ["customers snapshot"]
    assert by_entity["accounts"] == [{"entity": "accounts", "span": None, "since": "2026-11-24", "chunk": None,
                                      "label": "accounts changed since 2026-11-24"}]  # fmt: skip
    # 4,500 records at 1,000 a slice: five slices of whole days, end to end over the planned span
    tx = by_entity["transactions"]
    assert len(tx) == 5 and all(j["span"] == plan["transactions"] for j in tx)
    assert tx[0]["chunk"][0] == "2026-06-01" and tx[-1]["chunk"][1] == "2026-11-27"
    assert len({j["label"] for j in jobs}) == len(jobs)  # each mapped task is told apart in the UI
    # a small request is one job, without a chunk: its partition is landed whole
    assert [(j["chunk"], j["label"]) for j in by_entity["campaign_responses"]] == [
        (None, "campaign_responses 2026-11-24..2026-11-27")
    ]
    assert (ENDPOINTS["transactions"], {"date_from": "2026-06-01", "date_to": "2026-11-27"}) in asked
    # without the API's count, one slice
    assert len([j for j in slices(plan, settings) if j.entity == "transactions"]) == 1


def test_a_job_crosses_the_xcom_whole_and_a_malformed_one_is_named(tmp_path):
    """The mapped tasks get each job back as the plan made it; a job that names no entity of the
    contract, or a slice that ends before it starts, is refused with the job's label."""
    plan = {"transactions": ["2026-06-01", "2026-11-27"], "accounts": {"since": "2026-11-24"}}
    jobs = slices(plan, _settings(tmp_path, slice_records=1000), lambda endpoint, params: 2500)
    assert [ExtractionJob.from_xcom(job.as_xcom()) for job in jobs] == jobs
    first = next(job for job in jobs if job.entity == "transactions")
    assert first.part == dt.date(2026, 6, 1) and first.span == (dt.date(2026, 6, 1), dt.date(2026, 11, 27))
    with pytest.raises(ValueError, match=r"job 'loans snapshot': entity 'loans' is not one of"):
        ExtractionJob.from_xcom({"entity": "loans", "label": "loans snapshot"})
    with pytest.raises(ValueError, match=r"job 'tx': chunk 2026-11-27..2026-11-01 ends before it starts"):
        ExtractionJob("transactions", "tx", chunk=(dt.date(2026, 11, 27), dt.date(2026, 11, 1)))
