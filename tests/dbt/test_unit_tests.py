"""The dbt unit tests (eligibility rules, contact-policy suppression, RFM windows) against DuckDB.

dbt reads the column types of a unit test's inputs from the warehouse, so the upstream models are
built first with ``--empty`` on a fresh DuckDB whose raw tables are made from the contracts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from crm.settings import REPO_ROOT
from ingestion.extract import arrow_schema
from models.core_banking import ENTITIES


def _dbt(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRM_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "CRM_DBT_TARGET": "local"}
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", "--target-path",
           str(tmp_path / "target"), "--vars", "{business_date: '2026-11-27'}"]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO_ROOT / "dbt_project", env=env, capture_output=True, text=True, check=False)


def test_every_dbt_unit_test_passes(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("create schema raw")
        for entity, model in ENTITIES.items():
            empty = arrow_schema(model).empty_table()  # noqa: F841 - read by the statement below
            con.execute(f"create table raw.{entity} as select *, cast(null as date) as _business_date from empty")
    built = _dbt(tmp_path, "build", "--empty", "--exclude", "test_type:unit")
    assert built.returncode == 0, built.stdout[-3000:]
    tested = _dbt(tmp_path, "test", "--select", "test_type:unit")
    assert tested.returncode == 0, tested.stdout[-3000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    names = {r["unique_id"].rsplit(".", 1)[-1] for r in results if r["status"] == "pass"}
    assert {
        "rfm_windows_count_the_last_30_and_90_days_up_to_the_business_date",
        "eligibility_rules_consents_and_live_campaigns_decide_who_gets_which_campaign_and_channel",
        "a_recent_decline_or_an_acceptance_suppresses_the_campaign",
    } <= names
    assert all(r["status"] == "pass" for r in results)
