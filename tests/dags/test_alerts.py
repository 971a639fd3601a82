"""A failed run tells someone: the DAG run's failure reaches CRM_ALERT_EMAILS as an e-mail, through
Airflow's SMTP notifier and the Connection smtp_default, received by a real SMTP server."""

from __future__ import annotations

import datetime as dt

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from waits import wait_until

from crm.airflow_env import LocalAirflow, airflow, run_dag_test
from crm.services import free_port, stop_redis
from crm.settings import Settings, yesterday_in_lima


class Inbox(Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages = []

    def handle_message(self, message) -> None:
        self.messages.append(message)


@pytest.fixture
def inbox(monkeypatch):
    """A real SMTP server, and the Connection smtp_default pointing at it: what it received."""
    received, port = Inbox(), free_port()
    server = Controller(received, hostname="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        f"smtp://127.0.0.1:{port}?disable_tls=true&disable_ssl=true&from_email=airflow%40bank.example",
    )
    yield received.messages
    server.stop()


def _html(mail) -> str:
    return mail.get_payload()[0].get_payload(decode=True).decode() if mail.is_multipart() else mail.get_payload()


def test_a_failed_run_is_e_mailed_to_the_on_call(tmp_path, monkeypatch, inbox):
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_text("not a DuckDB file: the run's one task fails opening it")
    monkeypatch.setenv("CRM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CRM_DUCKDB_PATH", str(warehouse))
    monkeypatch.setenv("CRM_ALERT_EMAILS", "oncall@bank.example, data-team@bank.example")
    assert run_dag_test("crm_retention", dt.date(2026, 11, 27), {}, Settings(), quiet=True) == 1
    (mail,) = inbox
    assert mail["Subject"].startswith("[crm] crm_retention failed for 2026-11-27: ")
    assert set(mail["To"].replace(" ", "").split(",")) == {"oncall@bank.example", "data-team@bank.example"}
    body = _html(mail)
    assert "crm_retention" in body and "purge_personal_data" in body and "Airflow UI" in body


def test_each_failed_run_gets_its_own_e_mail(monkeypatch, inbox):
    """The DAG processor runs the callbacks of several failed runs (a backfill's, timeouts) with one
    parse of the DAG file: the one callback it holds must send each run its own e-mail."""
    from airflow.sdk import DAG

    from entrypoints.alerts import dag_alerting

    monkeypatch.setenv("CRM_ALERT_EMAILS", "oncall@bank.example")
    callback = dag_alerting(Settings())["on_failure_callback"]
    dag = DAG("crm_daily")
    for run_id in ("backfill__2026-11-02T05:00:00+00:00", "backfill__2026-11-03T05:00:00+00:00"):
        callback({"dag": dag, "run_id": run_id, "reason": "task_failure"})  # the processor's context, no task
    assert [m["Subject"] for m in inbox] == [
        "[crm] crm_daily failed: backfill__2026-11-02T05:00:00+00:00",
        "[crm] crm_daily failed: backfill__2026-11-03T05:00:00+00:00",
    ]
    assert "the last published snapshot" in _html(inbox[0])


def test_no_snapshot_by_the_deadline_is_e_mailed_by_airflows_scheduler(tmp_path, monkeypatch, inbox):
    """crm_daily's deadline alert, through a real scheduler and executor: a run for D not done by
    CRM_SNAPSHOT_DEADLINE_LIMA on D + 1 (past here; the DAG stays paused, so the run waits in its
    queue as a stuck one would) e-mails the on-call, naming the date, the run's state and what sales
    and the app read instead."""
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    monkeypatch.setenv("CRM_ALERT_EMAILS", "oncall@bank.example")
    monkeypatch.setenv("CRM_SNAPSHOT_DEADLINE_LIMA", "06:30")
    settings = Settings()
    day = yesterday_in_lima() - dt.timedelta(days=2)
    local = LocalAirflow(settings).start()
    try:
        trigger = ["dags", "trigger", "crm_daily", "--logical-date", f"{day}T00:00:00-05:00"]
        wait_until(lambda: airflow(trigger, settings, capture_output=True).returncode == 0, timeout=180,
                   interval=3, message="crm_daily parsed and triggered")  # fmt: skip
        wait_until(lambda: inbox, timeout=180, interval=1, message="the deadline's e-mail")
    finally:
        local.stop()
        stop_redis(settings)
    (mail,) = inbox
    next_day = day + dt.timedelta(days=1)
    assert mail["Subject"] == f"[crm] no offers snapshot for {day} by {next_day} 06:30 Lima: crm_daily is queued"
    assert mail["To"] == "oncall@bank.example"
    assert "no snapshot at all" in _html(mail) and "trigger crm_daily" in _html(mail)


def _missed(run_type: str, day: dt.date) -> dict:
    """The context Airflow's scheduler gives a missed deadline's callback (Deadline.handle_miss)."""
    return {
        "dag_run": {
            "dag_id": "crm_daily",
            "dag_run_id": f"{run_type}__{day}",
            "run_type": run_type,
            "state": "running",
            "logical_date": f"{day}T05:00:00Z",
        },
        "deadline": {"id": "d", "deadline_time": f"{day + dt.timedelta(days=1)}T12:00:00+00:00"},
    }


def test_a_snapshot_live_by_the_deadline_or_a_backfills_date_tells_nobody(tmp_path, monkeypatch, inbox):
    """The deadline passed with its run not done, yet the date's snapshot (or a later one) is live (a
    rerun in another run published it): no e-mail. Nor for a backfill's old date, whose snapshot is
    never published over a later one. A date after the live one is e-mailed, with what is live."""
    from assignments import assignments

    from entrypoints.alerts import check_snapshot_deadline
    from ml.registry import ModelRef
    from ml.score import write_assignments
    from serving.publish import publish_snapshot

    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    settings = Settings()
    settings.ensure_dirs()
    live = dt.date(2026, 11, 26)
    write_assignments(live, assignments(5, [("CMP-A", "SMS")]), ModelRef("m", "1"), settings)
    try:
        publish_snapshot(live, settings)
        assert "is live" in check_snapshot_deadline(_missed("scheduled", live), to=["oncall@bank.example"])
        assert "is live" in check_snapshot_deadline(_missed("manual", live - dt.timedelta(days=3)), to=["x@y.z"])
        assert "backfill" in check_snapshot_deadline(_missed("backfill", dt.date(2026, 12, 1)), to=["x@y.z"])
        assert inbox == []
        assert "e-mailed 1" in check_snapshot_deadline(_missed("scheduled", live + dt.timedelta(days=1)), to=["x@y.z"])
    finally:
        stop_redis(settings)
    (mail,) = inbox
    assert mail["Subject"].startswith("[crm] no offers snapshot for 2026-11-27 by 2026-11-28 07:00 Lima")
    assert "reading the snapshot of 2026-11-26" in _html(mail)


def test_a_cache_out_of_reach_at_the_deadline_is_still_e_mailed(tmp_path, monkeypatch, inbox):
    """Redis unreachable when the deadline passes is worse news, not a reason for silence."""
    from crm.services import free_port as unused_port
    from entrypoints.alerts import check_snapshot_deadline

    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    monkeypatch.setenv("CRM_REDIS_URL", f"redis://127.0.0.1:{unused_port()}/0")  # nothing listens there
    assert "e-mailed 1" in check_snapshot_deadline(_missed("scheduled", dt.date(2026, 11, 27)), to=["x@y.z"])
    (mail,) = inbox
    assert "whatever the cache holds: it could not be read (ConnectionError" in _html(mail)


DAGBAG = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags", known_pools={"default_pool", "crm_warehouse"})
print(json.dumps({
    "errors": {path.rsplit("/", 1)[-1]: error for path, error in bag.import_errors.items()},
    "dags": {d.dag_id: [bool(d.on_failure_callback), d.dagrun_timeout.total_seconds() if d.dagrun_timeout else None]
             for d in bag.dags.values()},
}))
"""


def _dagbag(tmp_path, **env) -> dict:
    import json
    import os
    import subprocess
    import sys

    from crm.settings import REPO_ROOT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    done = subprocess.run([sys.executable, "-c", DAGBAG], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          env={**clean, "CRM_HOME": str(tmp_path), **env})  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_dag_tells_someone_and_production_loads_none_that_tells_nobody(tmp_path):
    told = _dagbag(tmp_path, CRM_ALERT_EMAILS="oncall@bank.example", CRM_DAGRUN_TIMEOUT_HOURS="6")
    assert told["errors"] == {}
    assert told["dags"] == {name: [True, 6 * 3600.0] for name in ("crm_daily", "crm_model_training", "crm_retention")}
    # locally, nobody to tell is allowed (the Airflow UI shows the failure); the run still times out
    assert set(map(tuple, _dagbag(tmp_path)["dags"].values())) == {(False, 12 * 3600.0)}
    # in production, a DAG that would fail in silence does not load: the UI shows why, named
    silent = _dagbag(tmp_path, CRM_ENVIRONMENT="production")
    assert set(silent["errors"]) == {"crm_daily.py", "crm_model_training.py", "crm_retention.py"}
    assert all("CRM_ALERT_EMAILS" in error for error in silent["errors"].values())
    wrong = _dagbag(tmp_path, CRM_ENVIRONMENT="production", CRM_ALERT_EMAILS="oncall.bank.example")
    assert all(
        "CRM_ALERT_EMAILS='oncall.bank.example': 'oncall.bank.example' is not an e-mail address" in e
        for e in wrong["errors"].values()
    )
