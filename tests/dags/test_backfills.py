"""``make backfill``'s clean-up after a creation that failed half-way, on Airflow's real metadata
database: a creation refused by SQLite's lock can leave the backfill's row open (Airflow commits it
before the runs, and its own clean-up can fail under the same lock), and every later creation was
refused. The open backfill here is made by a real creation; the lock itself is not reproduced."""

from __future__ import annotations

import datetime as dt
import json

import pytest

WINDOW = [dt.datetime.fromisoformat(f"2026-11-{d}T00:00:00-05:00") for d in (24, 25)]


@pytest.fixture(scope="module")
def metadata(crm_home):
    """A metadata database of its own, with crm_daily serialized in it (paused: nothing runs)."""
    from crm.airflow_env import airflow, prepare_airflow
    from crm.settings import Settings

    settings = Settings(home=crm_home / "backfills")
    prepare_airflow(settings)
    done = airflow(["dags", "reserialize"], settings, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return settings


def _create(settings, window=WINDOW):
    from crm.airflow_env import airflow

    conf = json.dumps({"customers": 200, "seed": 7, "force_publish": False})
    return airflow(["backfill", "create", "--dag-id", "crm_daily", "--from-date", window[0].isoformat(),
                    "--to-date", window[1].isoformat(), "--reprocess-behavior", "completed",
                    "--dag-run-conf", conf], settings, capture_output=True, text=True)  # fmt: skip


def test_a_backfill_left_open_by_the_callers_own_creation_is_discarded_with_its_runs(metadata):
    from crm.airflow_env import dag_runs
    from crm.backfills import discard_backfills, open_backfills

    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    created = _create(metadata)
    assert created.returncode == 0, created.stderr[-2000:]
    assert open_backfills("crm_daily", metadata) == 1 and len(dag_runs("crm_daily", metadata)) == 2
    # what Airflow does to the next creation while it is open
    refused = _create(metadata)
    assert refused.returncode != 0 and "AlreadyRunningBackfill" in refused.stdout + refused.stderr

    assert discard_backfills("crm_daily", since, *WINDOW, metadata) == 1
    assert open_backfills("crm_daily", metadata) == 0
    assert dag_runs("crm_daily", metadata) == []
    again = _create(metadata)
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_backfill_made_before_the_caller_started_or_of_other_dates_is_left_alone(metadata):
    from crm.backfills import discard_backfills, open_backfills

    if open_backfills("crm_daily", metadata) == 0:  # run alone: one open backfill, made before
        assert _create(metadata).returncode == 0
    assert open_backfills("crm_daily", metadata) == 1
    now = dt.datetime.now(dt.UTC)
    assert discard_backfills("crm_daily", now, *WINDOW, metadata) == 0
    earlier = now - dt.timedelta(hours=1)
    other = [WINDOW[0] - dt.timedelta(days=1), WINDOW[1]]
    assert discard_backfills("crm_daily", earlier, *other, metadata) == 0
    assert open_backfills("crm_daily", metadata) == 1
