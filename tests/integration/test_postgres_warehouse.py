"""The warehouse on a server engine, through the one warehouse interface (``crm.warehouse``).

PostgreSQL is a real server the project starts itself (Debian's programs, ``crm.services``), as it
starts Redis. The daily stages run in process, in the order crm_daily runs them (the extraction
plan, the sandbox's extraction and landing gate, the raw load, dbt, the marts' gate, scoring,
dbt's reporting marts, the publish, retention), once on DuckDB and once on PostgreSQL, on the same
sandbox bank and champion model:
- every mart's rows of the date are the same on both, by content hash;
- every statement the stages sent to PostgreSQL, compiled by SQLAlchemy's SQL Server dialect,
  parses as T-SQL and holds no DuckDB-only construct: what Azure SQL would be sent (no SQL Server
  runs here);
- the interface writes a date's rows in one transaction on both engines.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import sqlglot
from tsql import duckdb_only_constructs

from crm import warehouse as interface
from crm.settings import Settings, environment
from crm.warehouse import engines
from entrypoints.runs import DAY_COLUMNS

D = dt.date(2026, 11, 27)
CUSTOMERS, SEED = 300, 11
PARAMS = {"customers": CUSTOMERS, "seed": SEED}


def _daily(home: Path, target: str, mlflow: Path) -> list[sa.Executable]:
    """crm_daily's task functions for D, in its order, on ``target``; the statements the
    warehouse interface sent (not MLflow's own, nor the dialect's catalog look-ups)."""
    from entrypoints import tasks

    sent: list[sa.Executable] = []

    def capture(conn, clauseelement, multiparams, params, execution_options):
        if conn.engine not in [engine for engine, _ in engines._engines.values()]:
            return  # MLflow's own store
        if isinstance(clauseelement, sa.sql.ClauseElement):
            native = str(clauseelement.compile(dialect=conn.dialect))
            if "pg_catalog." in native or "information_schema." in native:
                return  # the dialect's look-ups of its catalog (has_table): SQL Server's dialect has its own
        sent.append(clauseelement)

    env = {"CRM_HOME": str(home), "CRM_DBT_TARGET": target, "CRM_TASK_RETRIES": "0",
           "CRM_MLFLOW_TRACKING_URI": f"sqlite:///{mlflow / 'mlflow.db'}",
           "CRM_MLFLOW_ARTIFACT_ROOT": (mlflow / "artifacts").as_uri()}  # fmt: skip
    with environment(env):
        sa.event.listen(sa.Engine, "before_execute", capture)
        try:
            settings = tasks.run_settings(PARAMS)
            for job in tasks.plan_extraction(D, PARAMS):
                tasks.extract(job, D, PARAMS)
                tasks.gate_landing(job, D, PARAMS)
            tasks.load_raw(D, PARAMS)
            _dbt(settings, "--exclude", "tag:after_scoring")
            tasks.gate_marts(D, PARAMS)
            tasks.ensure_model(D, PARAMS)
            tasks.score_and_assign(D, PARAMS)
            _dbt(settings, "--select", "tag:after_scoring")
            tasks.publish(D, PARAMS)
            tasks.publish_analysts(D, PARAMS)  # on a server: nothing to copy, nothing sent
            # what training and evaluation read (the champion is shared: trained once, on DuckDB)
            from ml.evaluate import evaluate, latest_assigned_date
            from ml.training_set import TrainingWindow, feature_dates_missing, training_frame

            with interface.warehouse(settings).connect() as session:
                window = TrainingWindow(D)
                missing = feature_dates_missing(session, window)
                # on DuckDB the first training backfilled the window's feature dates
                assert (missing == []) == (target == "local") and len(training_frame(session, window)) >= 0
            assert latest_assigned_date(settings) == D
            evaluate(D, CUSTOMERS, SEED, settings)
            tasks.purge_personal_data(D + dt.timedelta(days=60), PARAMS)
        finally:
            sa.event.remove(sa.Engine, "before_execute", capture)
    return sent


def _dbt(settings: Settings, *selection: str) -> None:
    """``dbt build`` in this process, as the DAG's dbt tasks run it (Cosmos' dbtRunner)."""
    ok, error = interface.run_dbt_in_process(
        "build", *selection, duckdb_path=settings.duckdb_path, business_date=D, target=settings.dbt_target,
        target_path=settings.home / "dbt-target", settings=settings,
    )  # fmt: skip
    assert ok, error


@pytest.fixture(scope="module")
def runs(crm_home: Path) -> dict:
    mlflow = crm_home / "engines-mlflow"
    duck, pg = crm_home / "engines-duckdb", crm_home / "engines-postgres"
    _daily(duck, "local", mlflow)
    sent = _daily(pg, "postgres", mlflow)
    with environment({"CRM_HOME": str(duck), "CRM_DBT_TARGET": "local"}):
        duckdb_settings = Settings()
    with environment({"CRM_HOME": str(pg), "CRM_DBT_TARGET": "postgres"}):
        postgres_settings = Settings()
    yield {"duckdb": duckdb_settings, "postgres": postgres_settings, "sent": sent}
    from crm.embedded_postgres import stop_postgres
    from crm.services import stop_sandbox

    interface.dispose_engines()
    stop_postgres(postgres_settings)
    for s in (duckdb_settings, postgres_settings):
        stop_sandbox(s)


def _marts(settings: Settings) -> dict[str, tuple[int, str]]:
    with interface.warehouse(settings).connect() as session:
        return {
            table: interface.fingerprint(session, f"select * from marts.{table} where {col} = :d", {"d": D})
            for table, col in DAY_COLUMNS
        }


def test_every_mart_holds_the_same_rows_on_postgresql_as_on_duckdb(runs):
    duckdb_marts, postgres_marts = _marts(runs["duckdb"]), _marts(runs["postgres"])
    assert all(rows > 0 for rows, _ in duckdb_marts.values()), duckdb_marts
    assert postgres_marts == duckdb_marts
    # the retention ran on PostgreSQL too: the clear personal data of dates past the window is gone
    assert interface.warehouse(runs["postgres"]).scalar("select count(*) from raw.customers") == 0


def _tsql_dialect() -> sa.Dialect:
    from sqlalchemy.dialects.mssql import pyodbc

    dialect = pyodbc.dialect(paramstyle="qmark")  # as pyodbc binds: ? placeholders
    dialect.server_version_info = (12, 0)  # Azure SQL Database
    dialect._setup_version_attributes()
    dialect._supports_nvarchar_max = True
    return dialect


def _tsql(statement: sa.Executable) -> str:
    return str(statement.compile(dialect=_tsql_dialect(), compile_kwargs={"render_postcompile": True}))


def test_every_statement_the_stages_send_compiles_to_tsql(runs):
    from ingestion.raw_load import raw_table
    from ml.score import ASSIGNMENTS

    # PostgreSQL takes rows by COPY; SQL Server gets this insert, a batch of rows at a time
    inserts = [interface.insert_statement(table) for table in (raw_table("transactions"), ASSIGNMENTS)]
    compiled = [_tsql(statement) for statement in [*runs["sent"], *inserts]]
    # a table an older release made gains its new columns (sent only to such a warehouse)
    compiled += [
        interface.add_column(c, _tsql_dialect()) for c in (ASSIGNMENTS.c.arm, ASSIGNMENTS.c.selection_probability)
    ]
    unique = sorted(set(compiled))
    for sql in unique:
        assert sqlglot.parse(sql, read="tsql"), sql
        # what sqlglot's T-SQL parser lets through but SQL Server refuses
        assert duckdb_only_constructs(sql) == [], sql
        assert not re.search(r"\bif\s+not\s+exists\b|\bdouble\b(?!\s+precision)|\bany_value\s*\(", sql, re.I), sql
    text = "\n".join(unique).lower()
    # every stage's writes and reads are among them (a capture that misses a stage fails here)
    for expected in (
        "CREATE TABLE raw.customers", "CREATE TABLE raw._coverage", "DELETE FROM raw._coverage",
        "INSERT INTO raw.transactions", "CREATE TABLE marts.customer_campaign_assignments",
        "DELETE FROM marts.customer_campaign_assignments", "INSERT INTO marts.customer_campaign_assignments",
        "FROM marts.campaign_eligibility", "STDEVP(", "DATEADD(day, ", "DELETE FROM raw.customers WHERE",
        "FROM marts.customer_360", "FROM marts.campaign_performance", "FROM marts.customer_features",
        "UPDATE STATISTICS raw.transactions", "UPDATE STATISTICS raw.customers",
        "alter table marts.customer_campaign_assignments add arm NVARCHAR(16)",
    ):  # fmt: skip
        assert expected.lower() in text, expected
    assert " date not null" in text and "datetime" not in text  # dates stay dates on Azure SQL
    assert ":d" not in text and "?" in text  # bound as pyodbc binds


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_a_date_is_written_in_one_transaction(runs, engine):
    """A write that fails halfway leaves the date's rows as they were; a rerun gives the same rows."""
    table = sa.Table("one_transaction", interface.metadata, sa.Column("day", sa.Date(), nullable=False),
                     sa.Column("n", sa.Integer(), nullable=False), schema="marts", extend_existing=True)  # fmt: skip
    wh = interface.warehouse(runs[engine])
    good = pd.DataFrame({"day": [D, D], "n": [1, 2]})
    assert wh.replace_date(table, "day", D, good) == 2
    bad = pd.DataFrame({"day": [D, D, D], "n": [3, 4, None]})  # the third row breaks NOT NULL
    with pytest.raises(sa.exc.DBAPIError if engine == "postgres" else Exception):
        wh.replace_date(table, "day", D, bad)
    assert sorted(r[0] for r in wh.rows(sa.select(table.c.n))) == [1, 2]
    assert wh.replace_date(table, "day", D, good) == 2
    assert sorted(r[0] for r in wh.rows(sa.select(table.c.n))) == [1, 2]


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_a_table_an_older_release_made_gains_the_new_columns_and_keeps_its_rows(runs, engine):
    """The assignment table of a warehouse from before the experiment's arms has neither arm nor
    selection_probability: the next date's write adds them, the older dates' rows read as the model's
    picks, and no row is lost."""

    def table(*extra: sa.Column) -> sa.Table:
        return sa.Table("older_release", sa.MetaData(), sa.Column("day", sa.Date(), nullable=False),
                        sa.Column("n", sa.Integer(), nullable=False), *extra, schema="marts")  # fmt: skip

    old, new = table(), table(sa.Column("arm", sa.Unicode(16)), sa.Column("selection_probability", sa.Double()))
    wh = interface.warehouse(runs[engine])
    with wh.begin() as s:
        s.execute("drop table if exists marts.older_release")
    before = D - dt.timedelta(days=1)
    wh.replace_date(old, "day", before, pd.DataFrame({"day": [before, before], "n": [1, 2]}))
    fill = {"arm": "model", "selection_probability": 1.0}
    today = pd.DataFrame({"day": [D], "n": [3], "arm": ["control"], "selection_probability": [0.5]})
    assert wh.replace_date(new, "day", D, today, fill=fill) == 1
    assert wh.replace_date(new, "day", D, today, fill=fill) == 1  # a rerun: nothing more to add
    rows = sorted(tuple(r) for r in wh.rows(sa.select(new.c.day, new.c.n, new.c.arm, new.c.selection_probability)))
    assert rows == [(before, 1, "model", 1.0), (before, 2, "model", 1.0), (D, 3, "control", 0.5)]


def _count(wh, day: dt.date) -> int:
    return wh.scalar("select count(*) from marts.customer_features where as_of_date = :d", {"d": day})


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_the_marts_gate_validates_in_the_warehouse_and_names_what_broke(runs, engine):
    """gate_marts validates the date's customer_features where it is (GX's SQL data source on the
    interface's connections): a date whose rows repeat a customer and hold an age of 7 stops, naming
    the expectations, columns and counts; the other dates are not read."""
    from entrypoints import tasks
    from expectations.runner import GateFailed

    settings = runs[engine]
    wh = interface.warehouse(settings)
    bad_day = D + dt.timedelta(days=1)
    rows = wh.frame("select * from marts.customer_features where as_of_date = :d", {"d": D}).head(4)
    rows["as_of_date"], rows.loc[rows.index[0], "age"] = bad_day, 7
    with wh.begin() as session:
        features = sa.table("customer_features", *map(sa.column, rows.columns), schema="marts")
        session.insert_frame(features, pd.concat([rows, rows.iloc[1:]]))  # customers 2-4 twice
    env = {"CRM_HOME": str(settings.home), "CRM_DBT_TARGET": settings.dbt_target}
    with environment(env):
        passed = tasks.gate_marts(D, PARAMS)  # the good date passes, whole
        assert passed == {"rows": _count(wh, D), "expectations": 6} and passed["rows"] > 0
        with pytest.raises(GateFailed) as stopped:
            tasks.gate_marts(bad_day, PARAMS)
        never = D + dt.timedelta(days=30)  # a date dbt never built: said, not a GX batch error
        with pytest.raises(GateFailed, match=f"marts.customer_features holds no rows as of {never}"):
            tasks.gate_marts(never, PARAMS)
    message = str(stopped.value)
    assert f"data gate 'customer_features' failed for marts.customer_features as of {bad_day}" in message
    assert "expect_column_values_to_be_unique on column 'customer_id': 6 of 7 rows unexpected" in message
    assert "expect_column_values_to_be_between on column 'age': 1 of 7 rows unexpected" in message


def test_on_postgresql_the_tables_a_day_wrote_have_fresh_statistics(runs):
    """The raw load and every dbt table analyze what they wrote (decision 0017): a planner that
    believes a table holds none of the day's rows nests loops over it (minutes at 100,000 customers)."""
    analyzed = dict(
        interface.warehouse(runs["postgres"]).rows(
            "select schemaname || '.' || relname, last_analyze is not null from pg_stat_user_tables "
            "where schemaname in ('raw', 'marts')"
        )
    )
    for table in ("raw.transactions", "raw.customers", "marts.customer_features", "marts.campaign_eligibility",
                  "marts.fct_transactions"):  # fmt: skip
        assert analyzed.get(table), (table, analyzed)


def test_a_server_slow_to_answer_is_waited_for_never_started_twice(runs):
    """Every warehouse task finds the embedded server through ``ensure_postgres``. On two loaded
    cores a connection can take seconds; a task that then started a second server on the data
    directory failed ("lock file postmaster.pid already exists"). Here the server does not answer
    for 5 s (its postmaster stopped): the task waits for it, and goes on with the same server."""
    import contextlib
    import os
    import signal
    import threading

    from crm.embedded_postgres import ensure_postgres, postgres_pid

    settings = runs["postgres"]
    ensure_postgres(settings)
    pid = postgres_pid(settings)
    assert pid is not None
    resume = threading.Timer(5, os.kill, (pid, signal.SIGCONT))
    try:
        os.kill(pid, signal.SIGSTOP)
        resume.start()
        ensure_postgres(settings)
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert postgres_pid(settings) == pid
    assert _count(interface.warehouse(settings), D) > 0
