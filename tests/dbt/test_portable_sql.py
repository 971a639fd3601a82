"""Every dbt model, test and seed compiles for Azure SQL (dbt-sqlserver) with no server at hand,
and none of the compiled SQL leans on DuckDB-only syntax."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tsql import duckdb_only_constructs

from crm.settings import REPO_ROOT


@pytest.fixture(scope="module")
def azure_sql(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("azure_target")
    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "CRM_DBT_TARGET": "azure", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    cmd = [str(dbt), "compile", "--target", "azure", "--no-introspect", "--no-populate-cache", "--profiles-dir", ".",
           "--target-path", str(target), "--vars", "{business_date: '2026-11-27'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT / "dbt_project", env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    return {str(p.relative_to(target)): p.read_text() for p in (target / "compiled").rglob("*.sql")}


def test_every_model_compiles_for_azure(azure_sql):
    models = {p for p in azure_sql if "/models/" in p and "_models.yml" not in p and "_sources.yml" not in p}
    names = {Path(p).stem for p in models}
    assert {"customer_features", "campaign_eligibility", "stg_core_banking__customers"} <= names


def test_compiled_sql_has_no_duckdb_only_constructs(azure_sql):
    offenders = [f"{path}: {what}" for path, sql in azure_sql.items() for what in duckdb_only_constructs(sql)]
    assert offenders == []


def test_compiled_sql_parses_as_tsql(azure_sql):
    """Every compiled model, test and seed statement parses with a T-SQL grammar (sqlglot)."""
    import sqlglot
    from sqlglot.errors import ErrorLevel

    failures = []
    for path, sql in azure_sql.items():
        try:
            sqlglot.parse(sql, read="tsql", error_level=ErrorLevel.RAISE)
        except sqlglot.errors.SqlglotError as exc:
            failures.append(f"{path}: {str(exc).splitlines()[0]}")
    assert failures == []
    assert len(azure_sql) > 40  # every model and test was compiled
