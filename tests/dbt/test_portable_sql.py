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


def test_every_model_compiles_for_azure(azure_sql):
    manifest = json.loads((REPO_ROOT / "dbt_project" / "target" / "manifest.json").read_text())
    nodes = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] in ("model", "snapshot")}
    compiled = {Path(p).stem for p in azure_sql if "/models/" in p}
    assert "customer_360" in nodes
    assert "snp_core_banking__customers" in nodes  # the customer history: a model like the others
    assert nodes <= compiled, sorted(nodes - compiled)


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


def test_on_azure_sql_an_incremental_mart_runs_in_one_transaction(tmp_path):
    """dbt-sqlserver 1.11 makes begin/commit no-ops unless its behaviour flag says otherwise, so a
    delete+insert incremental would auto-commit the delete before the insert. The project sets the
    flags: the adapter, configured from the project for the azure target, emits BEGIN TRANSACTION
    and COMMIT around a materialization, and dbt no longer warns about either flag."""
    import os
    import sys

    dbt_dir = REPO_ROOT / "dbt_project"
    code = (
        "from dbt.cli.main import dbtRunner\n"
        "from dbt.adapters.sqlserver.sqlserver_connections import SQLServerConnectionManager as M\n"
        "done = dbtRunner().invoke(['compile', '--target', 'azure', '--no-introspect', '--no-populate-cache',\n"
        f"    '--select', 'customer_features', '--profiles-dir', '.', '--target-path', {str(tmp_path)!r}])\n"
        "m = M.__new__(M)\n"
        "m.add_query = lambda sql, auto_begin=True: print('SENT', sql)\n"
        "m._dbt_sqlserver_use_dbt_transactions = M._dbt_sqlserver_use_dbt_transactions\n"
        "m.add_begin_query(); m.add_commit_query()\n"
        "print('COMPILED', done.success)\n"
    )
    env = {**os.environ, "CRM_BUSINESS_DATE": "2026-11-27", "CRM_DBT_TARGET": "azure"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=dbt_dir, env=env, capture_output=True, text=True, check=False
    )
    text = out.stdout + out.stderr
    assert "COMPILED True" in text, text[-3000:]
    assert "SENT BEGIN TRANSACTION" in text and "SENT IF @@TRANCOUNT > 0 COMMIT TRANSACTION" in text
    assert "flags.dbt_sqlserver_use_dbt_transactions" not in text  # no behaviour-change warning left
    assert "flags.dbt_sqlserver_use_native_string_types" not in text
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    node = next(n for n in manifest["nodes"].values() if n["name"] == "customer_features")
    assert (node["config"]["materialized"], node["config"]["incremental_strategy"]) == ("incremental", "delete+insert")
