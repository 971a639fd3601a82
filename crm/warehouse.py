"""Connections to the local warehouse (DuckDB).

DuckDB allows one writing process, and within a process every connection to a file must share
one configuration (dbt-duckdb, running in-process under ``airflow dags test``, keeps a read-write
one open). So every connection is opened read-write, and every task that touches the warehouse
runs in the Airflow pool ``crm_duckdb`` of one slot.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from crm.settings import DBT_PROJECT_DIR, Settings, yesterday_in_lima


def connect(settings: Settings):
    import duckdb

    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.duckdb_path))
    # bounded: past CRM_DUCKDB_MEMORY_MB DuckDB spills to <warehouse>.duckdb.tmp. Set, not passed as
    # connect's config: DuckDB refuses a second connection to a file open in the same process (dbt
    # in an Airflow task) with a different config; dbt's profile sets the same
    con.execute(f"set memory_limit = '{settings.duckdb_memory_mb}MB'")
    return con


def _profile_env(duckdb_path, business_date, target) -> dict[str, str]:
    """What the project's ``profiles.yml`` and macros read from the environment, where given."""
    given = {"CRM_DUCKDB_PATH": duckdb_path, "CRM_BUSINESS_DATE": business_date, "CRM_DBT_TARGET": target}
    return {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **{k: str(v) for k, v in given.items() if v is not None}}


def _target_path(target_path: Path | None) -> list[str]:
    return [] if target_path is None else ["--target-path", str(target_path)]


def run_dbt(
    *args: str,
    duckdb_path: Path | None = None,
    business_date: dt.date | str | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    """``dbt <args>`` on the project with its own ``profiles.yml``: the warehouse file, the business
    date (``CRM_BUSINESS_DATE``) and the target (``CRM_DBT_TARGET``) go in as environment variables,
    each left as the environment has it when not given."""
    env = {**os.environ, **_profile_env(duckdb_path, business_date, target)}
    cmd = [str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", *_target_path(target_path)]
    return subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=capture, text=True, check=False)


def run_dbt_in_process(
    *args: str,
    duckdb_path: Path,
    business_date: dt.date | str,
    target: str,
    target_path: Path | None = None,
) -> tuple[bool, str]:
    """``dbt <args>`` inside this process (dbt's programmatic ``dbtRunner``), as the DAG's dbt tasks
    run: (success, the error if any). A task that runs dbt more than once uses this one: a dbt
    subprocess could not open the DuckDB file that dbt-duckdb, having run in this process under
    ``airflow dags test``, keeps open, and each in-process call saves dbt's start-up."""
    from dbt.cli.main import dbtRunner

    env = _profile_env(duckdb_path, business_date, target)
    saved = {k: os.environ.get(k) for k in env}
    cmd = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        *_target_path(target_path),
    ]
    os.environ.update(env)
    try:
        result = dbtRunner().invoke(cmd)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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
    return run_dbt(*args, duckdb_path=settings.duckdb_path, business_date=business_date, capture=False).returncode


def dbt_docs(settings: Settings, port: int, serve: bool = True) -> int:
    """Generate the dbt docs site (models, columns, tests, lineage, the warehouse's catalog) into
    ``<CRM_HOME>/dbt-docs`` and, with ``serve``, serve it for analysts on ``port`` until Ctrl-C."""
    settings.ensure_dirs()
    target = settings.home / "dbt-docs"
    if not settings.duckdb_path.exists():
        print("no warehouse yet: the site will describe the models without their tables (run make demo first)")
    code = dbt_command(settings, "docs", "generate", "--target-path", str(target), "--quiet")
    if code or not serve:
        if not code:
            print(f"dbt docs generated in {target} (index.html, manifest.json, catalog.json)")
        return code
    print(f"dbt docs on http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    try:
        return dbt_command(settings, "docs", "serve", "--target-path", str(target), "--port", str(port),
                           "--host", "127.0.0.1", "--no-browser")  # fmt: skip
    except KeyboardInterrupt:
        return 0
