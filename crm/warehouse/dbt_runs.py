"""dbt against the settings' warehouse: the environment its profile reads, a run in a subprocess
or in this process (as an Airflow task runs it), the ``dbt`` verb and its docs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from crm.settings import DBT_PROJECT_DIR, Settings, environment, yesterday_in_lima
from crm.warehouse.session import engine_name


def dbt_env(settings: Settings) -> dict[str, str]:
    """What dbt's profile reads to reach the settings' warehouse: the target, the DuckDB file, and
    on ``postgres`` the server (the embedded one started when it is the one)."""
    env = {"CRM_DBT_TARGET": settings.dbt_target, "CRM_DUCKDB_PATH": str(settings.duckdb_path)}
    if engine_name(settings) == "postgresql":
        pg = settings.postgres
        if pg.embedded:
            from crm.embedded_postgres import ensure_postgres

            pg = ensure_postgres(settings)
        env.update(pg.dbt_env())
    elif engine_name(settings) == "mssql":  # the Connection crm_warehouse's, or CRM_AZURE_SQL_*
        env.update(settings.azure_sql.dbt_env())
    env["CRM_ANALYST_ROLE"] = settings.analyst.role  # whom dbt grants the marts' reads
    return env


def _profile_env(duckdb_path, business_date, target, settings: Settings | None = None) -> dict[str, str]:
    """What the project's ``profiles.yml`` and macros read from the environment, where given."""
    given = {"CRM_DUCKDB_PATH": duckdb_path, "CRM_BUSINESS_DATE": business_date, "CRM_DBT_TARGET": target}
    warehouse_env = dbt_env(settings) if settings is not None else {}
    return {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **warehouse_env,
            **{k: str(v) for k, v in given.items() if v is not None}}  # fmt: skip


def _target_path(target_path: Path | None) -> list[str]:
    return [] if target_path is None else ["--target-path", str(target_path)]


def run_dbt(
    *args: str,
    duckdb_path: Path | None = None,
    business_date: dt.date | str | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    capture: bool = True,
    settings: Settings | None = None,
) -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project with its own ``profiles.yml``: the warehouse file, the business
    date (``CRM_BUSINESS_DATE``) and the target (``CRM_DBT_TARGET``) go in as environment variables,
    each left as the environment has it when not given."""
    env = {**os.environ, **_profile_env(duckdb_path, business_date, target, settings)}
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", *_target_path(target_path)]
    return subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=capture, text=True, check=False)


def run_dbt_in_process(
    *args: str,
    duckdb_path: Path,
    business_date: dt.date | str,
    target: str,
    target_path: Path | None = None,
    settings: Settings | None = None,
) -> tuple[bool, str]:
    """``dbt <args>`` inside this process (dbt's programmatic ``dbtRunner``), as the DAG's dbt tasks
    run: (success, the error if any). A task that runs dbt more than once uses this one: a dbt
    subprocess could not open the DuckDB file that dbt-duckdb, having run in this process under
    ``airflow dags test``, keeps open, and each in-process call saves dbt's start-up."""
    from dbt.cli.main import dbtRunner

    env = _profile_env(duckdb_path, business_date, target, settings)
    cmd = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        *_target_path(target_path),
    ]
    with environment(env):
        result = dbtRunner().invoke(cmd)
    if result.success:
        return True, ""
    if result.exception is not None:
        return False, f"{type(result.exception).__name__}: {result.exception}"
    failed = [r for r in (result.result or []) if getattr(r, "status", None) in ("error", "fail")]
    return False, "; ".join(f"{r.node.name}: {r.message}" for r in failed) or "dbt failed"


def dbt_command(settings: Settings, *args: str) -> int:
    """The dbt command line on the project against the local warehouse, its output shown (``make
    docs``, the manifest Cosmos renders from); the business date the compiled SQL shows is
    ``CRM_BUSINESS_DATE`` or yesterday's."""
    business_date = os.environ.get("CRM_BUSINESS_DATE") or yesterday_in_lima()
    return run_dbt(*args, business_date=business_date, capture=False, settings=settings).returncode


def dbt_docs(settings: Settings, target: Path) -> int:
    """Generate the dbt docs site (models, columns, tests, lineage, the warehouse's catalog) into
    ``target``: dbt's exit code."""
    settings.ensure_dirs()
    if not settings.duckdb_path.exists() and engine_name(settings) == "duckdb":
        print("no warehouse yet: the site will describe the models without their tables (run make demo first)")
    return dbt_command(settings, "docs", "generate", "--target-path", str(target), "--quiet")
