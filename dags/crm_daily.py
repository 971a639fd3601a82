"""
### crm_daily: today's campaign assignment, from core banking to the Redis cache

For business date **D** (the run's logical date, `ds`; the scheduled run for D starts at midnight
Lima time after D ends):

0. **plan_extraction**: what `raw` already holds decides what to fetch (docs/decisions/0013): of
   transactions and campaign responses, the day D and the `CRM_LATE_ARRIVAL_DAYS` (3) before it,
   whose days are replaced whole; when any earlier day of the 180 / 365 days the features need is
   missing (the first run, a gap), everything from the first missing day: the history load.
1. **extract** (one mapped task per job of the plan): customers and accounts as of D (or their
   changes since D), and the planned days of transactions and campaign responses, from the bank's
   integration API (Connection `crm_core_banking`; the embedded sandbox bank when none is set) into
   `landing/<entity>/business_date=D/`. A history load (or a big bank's day) is cut into slices of
   whole days of about `CRM_EXTRACT_SLICE_RECORDS` (5,000,000) records by the API's count, one task
   and one file each, so that several workers share it (CeleryExecutor: `make airflow
   EXECUTOR=celery`); a small bank's extraction is one slice per entity. Records that
   break their contract go to `quarantine/`.
2. **gate_landing** (mapped the same way): the Great Expectations suite of each job's landed files,
   queried in place (an in-memory DuckDB over the Parquet files).
3. **load_raw**: the landed partitions into the warehouse's `raw` schema, in one transaction.
4. **dbt_build**: one `dbt build` (astronomer-cosmos) of seeds, staging, the customer history and marts
   (`customer_features`, `campaign_eligibility`, `campaign_exclusions`, `fct_transactions`,
   `fct_campaign_contacts`, `dim_customers`), each model followed by its tests, in dbt's own order
   (a failing test skips what depends on it). Its log lists every model and test with its time and
   ends with dbt's counts. Staging views hold every load with its date; the intermediates are
   ephemeral, compiled into each mart with D; each mart writes D's rows only.
5. **gate_marts**: the Great Expectations suite of `marts.customer_features`.
6. **ensure_model**: the `champion` of `crm-campaign-propensity` in MLflow (when the registry has
   none, trains one as `crm_model_training` does, backfilling the feature dates it needs).
7. **score_and_assign**: scores every eligible customer x campaign pair in chunks and arbitrates
   into `marts.customer_campaign_assignments`: priority = propensity x offer value x campaign
   weight; at most 3 offers per customer; each campaign's daily capacity; each offer on the first
   of the campaign's channels the customer consented to that has capacity left and is under the
   contact policy's 30-day frequency cap; reasons with each offer. Each customer is in one arm of
   the day's experiment (a hash of id and date): the model's, exploration (a random eligible offer)
   or control (the offer logged, never served); each row says its arm and the probability it was
   picked with. The run is logged to MLflow.
   A date with no eligible pair, or none assigned, stops here at the assignment gate (the error
   gives the counts and which campaigns are live and why they reached no one).
8. **dbt_reporting**: the marts built from the day's assignment, `campaign_performance` and
   `customer_360` (dbt tag `after_scoring`).
9. **publish_cache**: writes the assignments to Redis (Connection `crm_redis`; the embedded server
   when none is set) as a new snapshot with a 24-hour TTL and switches to it atomically. With them
   go what the console shows beside them (each campaign's last 30 days from `campaign_performance`,
   each customer's masked profile from `customer_360`), so the console never queries the warehouse.
10. **hand_off_executions** (after it): when the snapshot went live, hands the date's list to the
   bank's campaign execution through the integration API (`PUT /v1/campaign-executions/{date}`):
   the served offers to contact the next day, highest priority first, and the control arm to track
   without contacting (so what each campaign added can be measured). The sandbox bank contacts that
   list and reports the responses, some days later, in its feed: the loop is closed.
   On with the embedded sandbox bank; with a bank's API only when `CRM_HAND_OFF_EXECUTIONS=true`.
11. **publish_analysts** (beside them): on DuckDB, the dates of `marts`, `snapshots` and `campaigns`
   this run changed, as Parquet files under `analysts/`, listed by a manifest replaced at once:
   what `crm sql` (`make sql`) reads, so an analyst never holds the file a run writes and sees a
   date whole or not at all. On a server it copies nothing: analysts read it as their role.

**Assets**: `gate_marts`, `score_and_assign` and `publish_cache` update the assets `crm_marts`,
`crm_assignment` and `crm_offers_snapshot`, each event with its business date (and the snapshot's
with whether it went live): `crm_model_training` runs on the assignment, `crm_retention` on the
snapshot (the Assets view shows each event and the run it came from).

**Rerun or backfill**: every task reads and writes only D's partitions, so clearing a run (or
`make backfill FROM=D1 TO=D2`, `airflow backfill create --dag-id crm_daily --from-date D1 --to-date D2`,
or the UI) gives
the same rows and the same assignment, and runs of different dates may run side by side.
**Publishing only moves forward**: a run for a date older than the live snapshot's writes its
warehouse rows and assignment and leaves the live snapshot serving (`publish_cache` succeeds and
its log says why); param `force_publish=true` publishes it on purpose. A rerun of the live date
replaces the live snapshot.
Every task that reads or writes the warehouse is in the pool `crm_warehouse`: one slot on DuckDB,
which has one writing process, `CRM_WAREHOUSE_POOL_SLOTS` on PostgreSQL or Azure SQL, where the
tasks that write what every date shares (the plan, the raw load, dbt, a first model's feature
backfill) take the whole pool and the others of several dates run side by side (dbt's threads
run a layer's models in parallel). Why one dbt task and not one per model: docs/decisions/0010.
Params `customers` and `seed` size the embedded sandbox bank only. The publish guard refuses a
snapshot that serves more than `CRM_MAX_AUDIENCE_SHRINK` (30%) fewer customers than the live one;
the live snapshot keeps serving, and a rerun with param `force_publish=true` publishes anyway.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from cosmos import ProfileConfig
from cosmos import settings as cosmos_settings
from cosmos.constants import InvocationMode

from crm.airflow_env import DBT_PARSE_CACHE_NAME
from crm.settings import WAREHOUSE_POOL, get_settings
from entrypoints.alerts import dag_alerting
from entrypoints.assets import ASSIGNMENT, MARTS, SNAPSHOT, mark
from entrypoints.dag_defaults import default_args
from entrypoints.dbt_lineage import DbtBuildWithLineage
from entrypoints.lineage_report import fresh_lineage

settings = get_settings()
DBT_DIR = settings.dbt_project_dir
# the tasks that write what every date shares (raw's overlapping days, dbt's views and intermediate
# relations, a first model's feature backfill) take the whole warehouse pool: never two at once, and
# no other warehouse task beside them; the others (gates, scoring, publish) of several dates run
# side by side on a server
WRITER_SLOTS = settings.warehouse_pool_slots


def _business_date(ds: str) -> dt.date:
    return dt.date.fromisoformat(ds)


# the reporting marts (campaign_performance, customer_360) read the day's assignments
AFTER_SCORING = "tag:after_scoring"


def _ensure_warehouse(context) -> None:
    """Before a dbt task, in its process: what dbt's profile reads to reach the warehouse (on
    ``postgres``, the server: the Connection ``crm_warehouse``'s password included, or the embedded
    server, started when it is not running). Set here, not in the operator's ``env``, which the
    serialized DAG and the UI's rendered fields would show."""
    import os

    from crm.warehouse import dbt_env

    os.environ.update(dbt_env(settings))


# the project's partial parse, shared by the dbt calls of every date (Cosmos writes it atomically);
# none when Cosmos's cache is off ([cosmos] enable_cache, enable_cache_partial_parse)
DBT_PARSE_CACHE = (
    cosmos_settings.cache_dir / DBT_PARSE_CACHE_NAME
    if cosmos_settings.enable_cache and cosmos_settings.enable_cache_partial_parse
    else None
)


def _dbt_build(task_id: str, **selection: str) -> DbtBuildWithLineage:
    """One ``dbt build`` of the selected part of the project: each model, then its tests, in dbt's
    order and with its threads (one task, not one per model: decision 0010)."""
    return DbtBuildWithLineage(
        task_id=task_id,
        project_dir=str(DBT_DIR),
        manifest_filepath=str(DBT_DIR / "target" / "manifest.json"),
        profile_config=ProfileConfig(
            profile_name="crm",
            target_name=settings.dbt_target,
            profiles_yml_filepath=DBT_DIR / "profiles.yml",
        ),
        dbt_executable_path=str(Path(sys.executable).parent / "dbt"),
        invocation_mode=InvocationMode.DBT_RUNNER,
        # dbt's partial parse kept between calls (Cosmos copies the project to a temporary folder for
        # each, and without a cache folder of its own dbt parsed the whole project every time: about
        # 3 s of each of the run's two dbt calls)
        cache_dir=DBT_PARSE_CACHE,
        env={
            # not a dbt var: a var that changes every day makes every dbt call parse the whole project
            "CRM_BUSINESS_DATE": "{{ ds }}",
            "CRM_DUCKDB_PATH": str(settings.duckdb_path),
            "CRM_DBT_TARGET": settings.dbt_target,
        },
        append_env=True,
        install_deps=False,
        # no Airflow asset per model: nothing schedules on them
        emit_datasets=False,
        # one slot on DuckDB (every warehouse task takes turns); on a server, dbt's threads and the
        # other dates' tasks run side by side
        pool=WAREHOUSE_POOL,
        pool_slots=WRITER_SLOTS,
        on_execute_callback=[fresh_lineage, _ensure_warehouse],
        **selection,
    )


@dag(
    dag_id="crm_daily",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="America/Lima"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    **dag_alerting(settings, snapshot_deadline=True),  # a failed, overlong or late run e-mails CRM_ALERT_EMAILS
    max_active_runs=1,
    tags=["crm", "daily"],
    default_args=default_args(
        settings,
        on_execute_callback=fresh_lineage,  # each task's lineage events name what it alone read and wrote
    ),
    params={
        "customers": Param(
            settings.sandbox.customers,
            type="integer",
            minimum=1,
            description="sandbox bank size",
        ),
        "seed": Param(settings.sandbox.seed, type="integer", description="sandbox bank seed"),
        "force_publish": Param(
            False, type="boolean", description="publish even when the served audience shrank past the guard"
        ),
    },
)
def crm_daily():
    @task(pool=WAREHOUSE_POOL, pool_slots=WRITER_SLOTS)
    def plan_extraction(ds: str | None = None, params: dict | None = None) -> list[dict]:
        from entrypoints.tasks import plan_extraction as run

        return run(_business_date(ds), params)

    @task(map_index_template="{{ job_label }}")
    def extract(job: dict, ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import extract as run

        get_current_context()["job_label"] = job["label"]

        return run(job, _business_date(ds), params)

    @task(map_index_template="{{ job_label }}")
    def gate_landing(job: dict, ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import gate_landing as run

        get_current_context()["job_label"] = job["label"]

        return run(job, _business_date(ds), params)

    @task(pool=WAREHOUSE_POOL, pool_slots=WRITER_SLOTS)
    def load_raw(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import load_raw as run

        return run(_business_date(ds), params)

    dbt = _dbt_build("dbt_build", exclude=AFTER_SCORING)
    dbt_reporting = _dbt_build("dbt_reporting", select=AFTER_SCORING)

    @task(pool=WAREHOUSE_POOL, outlets=[MARTS])  # the day's marts, built and validated
    def gate_marts(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import gate_marts as run

        day = _business_date(ds)
        result = run(day, params)
        mark(MARTS, day)
        return result

    @task(pool=WAREHOUSE_POOL, pool_slots=WRITER_SLOTS)
    def ensure_model(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import ensure_model as run

        return run(_business_date(ds), params)

    @task(pool=WAREHOUSE_POOL, outlets=[ASSIGNMENT])
    def score_and_assign(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import score_and_assign as run

        day = _business_date(ds)
        result = run(day, params)
        mark(ASSIGNMENT, day)
        return result

    # first of the two when they wait for the same slot: sales and the app read the cache
    @task(pool=WAREHOUSE_POOL, priority_weight=2, outlets=[SNAPSHOT])
    def publish_cache(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import publish as run

        day = _business_date(ds)
        result = run(day, params)
        # a date older than the live one is not published (the guard): the event says so
        mark(SNAPSHOT, day, published=result["published"], snapshot_id=result["snapshot_id"])
        return result

    @task(pool=WAREHOUSE_POOL)
    def hand_off_executions(published: dict, ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import hand_off_executions as run

        return run(_business_date(ds), published, params)

    @task(pool=WAREHOUSE_POOL)
    def publish_analysts(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.tasks import publish_analysts as run

        return run(_business_date(ds), params)

    jobs = plan_extraction()
    extracted = extract.expand(job=jobs)
    gated = gate_landing.expand(job=jobs)
    extracted >> gated
    scored = gated >> load_raw() >> dbt >> gate_marts() >> ensure_model() >> score_and_assign()
    published = publish_cache()
    scored >> dbt_reporting >> [published, publish_analysts()]
    hand_off_executions(published)


crm_daily()
