"""Every DAG file imports cleanly, quickly, and declares what the on-call engineer relies on."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from crm.settings import REPO_ROOT

ALLOWED_TAGS = {"crm", "daily", "training", "serving", "ops"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    # known_pools: a task naming a pool the deployment does not create fails to import
    return DagBag(dag_folder=str(REPO_ROOT / "dags"), known_pools={"default_pool", "crm_warehouse"})


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"crm_daily", "crm_model_training", "crm_retention"} <= set(dagbag.dags)


def test_every_dag_has_owner_retries_docs_and_known_tags(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no docs for the on-call engineer"
        assert dag.tags and set(dag.tags) <= ALLOWED_TAGS, f"{dag_id} tags {dag.tags}"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries"
            assert task.execution_timeout, f"{dag_id}.{task.task_id} may run forever (no execution_timeout)"


def test_crm_daily_runs_every_stage_in_order(dagbag):
    dag = dagbag.dags["crm_daily"]
    ids = set(dag.task_ids)
    for stage in (
        "plan_extraction",
        "extract",
        "gate_landing",
        "load_raw",
        "gate_marts",
        "ensure_model",
        "score_and_assign",
        "publish_cache",
    ):
        assert stage in ids
    # dbt builds the marts in one `dbt build` (each model, then its tests); the reporting marts
    # come after the day's scoring
    order = ["plan_extraction", "extract", "gate_landing", "load_raw", "dbt_build", "gate_marts", "ensure_model", "score_and_assign",
             "publish_cache"]  # fmt: skip
    for before, after in itertools.pairwise(order):
        assert before in dag.get_task(after).get_flat_relative_ids(upstream=True), (before, after)
    assert "score_and_assign" in dag.get_task("dbt_reporting").get_flat_relative_ids(upstream=True)
    # the console's extras (campaign_performance, customer_360) are published with the snapshot
    assert "dbt_reporting" in dag.get_task("publish_cache").get_flat_relative_ids(upstream=True)
    # the analysts' copy: every mart of the date written, reporting included; the cache goes first
    assert "dbt_reporting" in dag.get_task("publish_analysts").get_flat_relative_ids(upstream=True)
    assert dag.get_task("publish_cache").priority_weight > dag.get_task("publish_analysts").priority_weight
    assert dag.get_task("dbt_build").exclude == dag.get_task("dbt_reporting").select == "tag:after_scoring"
    # every task that touches the warehouse shares the warehouse pool (one slot on DuckDB)
    # the bank gets the list of a snapshot that went live: after the publish, with its answer
    assert "publish_cache" in dag.get_task("hand_off_executions").upstream_task_ids
    for task_id in ("load_raw", "dbt_build", "gate_marts", "score_and_assign", "publish_cache", "dbt_reporting",
                    "publish_analysts", "hand_off_executions"):  # fmt: skip
        assert dag.get_task(task_id).pool == "crm_warehouse", task_id


def _produced_by(dag) -> dict[str, set[str]]:
    """Each asset's name, and the tasks of ``dag`` that update it."""
    out: dict[str, set[str]] = {}
    for task in dag.tasks:
        for outlet in task.outlets:
            out.setdefault(outlet.name, set()).add(task.task_id)
    return out


def test_retention_and_training_follow_what_crm_daily_produced_not_a_clock(dagbag):
    """crm_daily updates its marts, assignment and snapshot assets from the tasks that make them;
    retention is scheduled on the snapshot, training on the assignment: a late daily run delays
    them instead of racing them."""
    produced = _produced_by(dagbag.dags["crm_daily"])
    assert produced == {"crm_marts": {"gate_marts"}, "crm_assignment": {"score_and_assign"},
                        "crm_offers_snapshot": {"publish_cache"}}  # fmt: skip
    training = dagbag.dags["crm_model_training"].timetable
    assert type(training).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in training.asset_condition.objects] == ["crm_assignment"]
    # retention: on the snapshot, and at 04:00 Lima whatever became of the daily run (the law's clock)
    retention = dagbag.dags["crm_retention"].timetable
    assert type(retention).__name__ == "AssetOrTimeSchedule"
    assert [a.name for a in retention.asset_condition.objects] == ["crm_offers_snapshot"]
    assert (retention.timetable.expression, str(retention.timetable.timezone)) == ("0 4 * * *", "America/Lima")


def test_retention_writes_through_the_warehouse_pool(dagbag):
    dag = dagbag.dags["crm_retention"]
    assert [t.pool for t in dag.tasks] == ["crm_warehouse"]
    assert "CRM_RAW_RETENTION_DAYS" in dag.doc_md


def test_model_training_is_weekly_with_the_parameters_a_data_engineer_sets(dagbag):
    dag = dagbag.dags["crm_model_training"]
    assert dag.get_task("as_of").downstream_task_ids == {"backfill_features", "train_and_promote"}
    assert dag.get_task("backfill_features").downstream_task_ids == {"train_and_promote"}
    for task in dag.tasks:
        if task.task_id != "as_of":
            assert task.pool == "crm_warehouse", task.task_id  # it writes the warehouse (feature backfill)
    params = dag.params.dump()
    assert params["training_window_days"] == 84 and params["promotion_margin"] == 0.005
    from ml.train import CANDIDATES

    assert params["candidates"] == list(CANDIDATES)
    assert params["business_date"] is None and params["feature_step_days"] == 7


def test_on_a_server_warehouse_the_pool_has_the_configured_slots_and_dbt_reaches_the_server(tmp_path):
    """PostgreSQL and Azure SQL have no single-writer limit: with CRM_DBT_TARGET=postgres the pool
    ``crm_warehouse`` that ``make airflow`` creates has CRM_WAREHOUSE_POOL_SLOTS slots (one on
    DuckDB); the writers take all of them, and no server detail is in the DAG's dbt tasks."""
    import json

    import yaml

    from crm.airflow_env import airflow, prepare_airflow
    from crm.settings import Settings

    code = (
        "from airflow.dag_processing.dagbag import DagBag; "
        f"dag = DagBag(dag_folder={str(REPO_ROOT / 'dags')!r}, known_pools={{'default_pool', 'crm_warehouse'}}).dags['crm_daily']; "
        "print(sorted((t.task_id, t.pool, t.pool_slots) for t in dag.tasks if t.pool != 'default_pool')); "
        "t = dag.get_task('dbt_build'); print(bool(t.on_execute_callback), sorted(k for k in t.env if 'POSTGRES' in k))"
    )
    env = {**os.environ, "CRM_DBT_TARGET": "postgres", "CRM_HOME": str(tmp_path), "CRM_WAREHOUSE_POOL_SLOTS": "6"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=env
    )
    pools, dbt = out.stdout.strip().splitlines()[-2:]
    # the writers of what every date shares take the whole pool; the others one slot each
    assert pools == str(sorted([
        ("dbt_build", "crm_warehouse", 6), ("dbt_reporting", "crm_warehouse", 6), ("ensure_model", "crm_warehouse", 6),
        ("gate_marts", "crm_warehouse", 1), ("load_raw", "crm_warehouse", 6), ("plan_extraction", "crm_warehouse", 6),
        ("hand_off_executions", "crm_warehouse", 1), ("publish_analysts", "crm_warehouse", 1),
        ("publish_cache", "crm_warehouse", 1),
        ("score_and_assign", "crm_warehouse", 1),
    ]))  # fmt: skip
    # the server reaches dbt in the task's own process (a callback), never in the serialized DAG
    assert dbt == "True []"
    os.environ.update({k: v for k, v in env.items() if k != "CRM_HOME"})
    try:
        settings = Settings(home=tmp_path)
        prepare_airflow(settings)
        listed = airflow(["pools", "list", "-o", "json"], settings, capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr[-2000:]
    finally:
        for k in ("CRM_DBT_TARGET", "CRM_WAREHOUSE_POOL_SLOTS"):
            os.environ.pop(k)
    slots = {p["pool"]: int(p["slots"]) for p in json.loads(listed.stdout)}
    assert slots["crm_warehouse"] == 6
    profile = yaml.safe_load((REPO_ROOT / "dbt_project" / "profiles.yml").read_text())
    assert profile["crm"]["outputs"]["azure"]["threads"] >= 4


def test_dag_files_do_no_work_at_import():
    """Importing a DAG file starts no service and opens no warehouse (a fresh CRM_HOME stays empty)."""
    code = (
        "import os, runpy, pathlib, tempfile; h = tempfile.mkdtemp(); os.environ['CRM_HOME'] = h; "
        f"[runpy.run_path(str(p)) for p in pathlib.Path({str(REPO_ROOT / 'dags')!r}).glob('*.py')]; "
        "print(sorted(os.listdir(h)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
