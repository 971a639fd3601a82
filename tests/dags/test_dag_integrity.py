"""Every DAG file imports cleanly, quickly, and declares what the on-call engineer relies on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crm.settings import REPO_ROOT

ALLOWED_TAGS = {"crm", "daily", "training", "serving", "ops"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    # known_pools: a task naming a pool the deployment does not create fails to import
    return DagBag(dag_folder=str(REPO_ROOT / "dags"), known_pools={"default_pool", "crm_duckdb"})


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "crm_daily" in dagbag.dags


def test_every_dag_has_owner_retries_docs_and_known_tags(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no docs for the on-call engineer"
        assert dag.tags and set(dag.tags) <= ALLOWED_TAGS, f"{dag_id} tags {dag.tags}"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries"


def test_crm_daily_runs_every_stage_in_order(dagbag):
    dag = dagbag.dags["crm_daily"]
    ids = set(dag.task_ids)
    for stage in (
        "extract",
        "gate_landing",
        "load_raw",
        "gate_marts",
        "ensure_model",
        "score_and_assign",
        "publish_cache",
    ):
        assert stage in ids
    # one dbt task per model, each followed by its tests
    assert "dbt.customer_features.run" in ids and "dbt.customer_features.test" in ids
    assert "dbt.campaign_eligibility.run" in ids
    upstream_of_publish = dag.get_task("publish_cache").get_flat_relative_ids(upstream=True)
    assert {"extract", "load_raw", "dbt.campaign_eligibility.run", "score_and_assign"} <= upstream_of_publish
    # every task that touches the warehouse shares the one-slot pool
    for task_id in ("load_raw", "dbt.customer_features.run", "gate_marts", "score_and_assign", "publish_cache"):
        assert dag.get_task(task_id).pool == "crm_duckdb", task_id


def test_dag_files_do_no_work_at_import():
    """Importing a DAG file starts no service and opens no warehouse (a fresh CRM_HOME stays empty)."""
    code = (
        "import os, runpy, pathlib, tempfile; h = tempfile.mkdtemp(); os.environ['CRM_HOME'] = h; "
        f"[runpy.run_path(str(p)) for p in pathlib.Path({str(REPO_ROOT / 'dags')!r}).glob('*.py')]; "
        "print(sorted(os.listdir(h)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
