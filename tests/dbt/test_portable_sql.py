"""Every dbt model, test and seed compiles for Azure SQL (dbt-sqlserver) with no server at hand,
and none of the compiled SQL leans on DuckDB-only syntax."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tsql import duckdb_only_constructs

from crm.settings import REPO_ROOT
from crm.warehouse import run_dbt


def _compile_for_azure(target: Path, *select: str) -> subprocess.CompletedProcess:
    return run_dbt("compile", "--target", "azure", "--no-introspect", "--no-populate-cache", *select,
                   business_date="2026-11-27", target="azure", target_path=target)  # fmt: skip


@pytest.fixture(scope="module")
def azure_sql(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("azure_target")
    done = _compile_for_azure(target)
    assert done.returncode == 0, done.stdout[-3000:]
    return {str(p.relative_to(target)): p.read_text() for p in (target / "compiled").rglob("*.sql")}


def test_every_model_and_snapshot_compiles_for_azure(azure_sql):
    manifest = json.loads((REPO_ROOT / "dbt_project" / "target" / "manifest.json").read_text())
    nodes = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] in ("model", "snapshot")}
    compiled = {Path(p).stem for p in azure_sql if "/models/" in p}
    assert "customer_360" in nodes
    assert nodes - {"snp_core_banking__customers"} <= compiled, sorted(nodes - compiled)


def test_the_customer_snapshot_compiles_for_azure_as_tsql(tmp_path):
    """dbt writes no file for a snapshot defined in YAML: its compiled query is read from the output."""
    import sqlglot

    done = _compile_for_azure(tmp_path, "--select", "snp_core_banking__customers")
    assert done.returncode == 0, done.stdout[-3000:]
    sql = done.stdout.split("Compiled node 'snp_core_banking__customers' is:", 1)[1].strip()
    assert "stg_core_banking__customers" in sql
    sqlglot.parse_one(sql, read="tsql")


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
