"""Retention and training follow what crm_daily produced, through Airflow's own scheduler: an event
of crm_daily's snapshot asset starts crm_retention for the event's business date; an assignment
event starts crm_model_training, which trains only after a business date on the training weekday."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

from waits import wait_until

from crm.airflow_env import LocalAirflow, airflow, airflow_env, dag_runs
from crm.services import stop_redis
from crm.settings import REPO_ROOT, Settings
from entrypoints.assets import training_as_of

# what crm_daily's task does when it succeeds: an event of its outlet, with the business date
EMIT = """
import json, sys
from airflow.assets.manager import AssetManager
from airflow.models.asset import AssetModel
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    asset = session.scalar(select(AssetModel).where(AssetModel.name == sys.argv[1]))
    AssetManager().register_asset_change(asset=asset, extra=json.loads(sys.argv[2]), session=session)
"""

RETURNED = """
import json, sys
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    value = session.scalar(select(XComModel.value).where(XComModel.dag_id == sys.argv[1],
        XComModel.run_id == sys.argv[2], XComModel.task_id == sys.argv[3], XComModel.key == "return_value"))
    print(json.dumps(value if not isinstance(value, str) else json.loads(value)))
"""

TASK_STATES = """
import json, sys
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    rows = session.execute(select(TaskInstance.task_id, TaskInstance.state).where(
        TaskInstance.dag_id == sys.argv[1], TaskInstance.run_id == sys.argv[2])).all()
    print(json.dumps({task: str(state) for task, state in rows}))
"""


def _python(script: str, settings: Settings, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], env=airflow_env(settings), cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _finished(dag_id: str, settings: Settings) -> list[dict]:
    """The runs the events started (retention also has its 04:00 run) that have ended."""
    return [r for r in dag_runs(dag_id, settings)
            if r["run_id"].startswith("asset_triggered__") and r["state"] in ("success", "failed")]  # fmt: skip


def test_crm_dailys_assets_start_retention_and_training_for_their_business_date(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    monkeypatch.setenv("CRM_TRAINING_WEEKDAY", "Saturday")
    settings = Settings()
    friday = dt.date(2026, 11, 27)
    local = LocalAirflow(settings).start()
    try:
        for dag_id in ("crm_retention", "crm_model_training"):
            wait_until(lambda d=dag_id: airflow(["dags", "unpause", d], settings, capture_output=True).returncode == 0,
                       timeout=180, interval=3, message=f"{dag_id} parsed and unpaused")  # fmt: skip
        _python(EMIT, settings, "crm_offers_snapshot", json.dumps({"business_date": str(friday), "published": True}))
        _python(EMIT, settings, "crm_assignment", json.dumps({"business_date": str(friday)}))
        (retention,) = wait_until(lambda: _finished("crm_retention", settings), timeout=240, interval=3,
                                  message="crm_retention run on the snapshot event")  # fmt: skip
        (training,) = wait_until(lambda: _finished("crm_model_training", settings), timeout=240, interval=3,
                                 message="crm_model_training run on the assignment event")  # fmt: skip
        purged = json.loads(_python(RETURNED, settings, "crm_retention", retention["run_id"], "purge_personal_data"))
        states = json.loads(_python(TASK_STATES, settings, "crm_model_training", training["run_id"]))
    finally:
        local.stop()
        stop_redis(settings)
    # retention ran for the event's date, by the scheduler, not by a clock
    assert retention["state"] == "success" and retention["run_id"].startswith("asset_triggered__"), retention
    assert purged["business_date"] == str(friday) and purged["kept_from"] == str(friday - dt.timedelta(days=35))
    # training stopped at as_of: Friday's assignment is not the training weekday's; nothing trained
    assert training["state"] == "success" and training["run_id"].startswith("asset_triggered__"), training
    assert states == {"as_of": "success", "backfill_features": "skipped", "train_and_promote": "skipped"}


class _Event:
    def __init__(self, day: str, run_id: str = "scheduled__x"):
        self.extra, self.source_run_id = {"business_date": day}, run_id


def test_training_takes_the_param_then_a_training_weekdays_assignment_then_the_runs_date():
    saturday = 5
    events = {"crm_assignment": [_Event("2026-11-27"), _Event("2026-11-28")]}  # a Friday, then a Saturday
    assert training_as_of({"triggering_asset_events": events}, {}, None, saturday)[0] == dt.date(2026, 11, 28)
    day, why = training_as_of({"triggering_asset_events": {"a": [_Event("2026-11-27")]}}, {}, None, saturday)
    assert day is None and "a Friday: training follows Saturdays'" in why
    assert training_as_of({}, {"business_date": "2026-11-20"}, "2026-11-30", saturday)[0] == dt.date(2026, 11, 20)
    assert training_as_of({}, {}, "2026-11-30", saturday)[0] == dt.date(2026, 11, 29)
    assert training_as_of({}, {}, None, saturday)[0] is None
    # a backfill's Saturday never retrains; a Saturday queued before a Sunday still does
    backfill = {"crm_assignment": [_Event("2026-11-28", "backfill__2026-11-28T05:00:00+00:00")]}
    day, why = training_as_of({"triggering_asset_events": backfill}, {}, None, saturday)
    assert day is None and "backfill" in why
    queued = {"crm_assignment": [_Event("2026-11-28"), _Event("2026-11-29")]}
    assert training_as_of({"triggering_asset_events": queued}, {}, None, saturday)[0] == dt.date(2026, 11, 28)
