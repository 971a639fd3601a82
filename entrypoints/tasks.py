"""The stages of the daily pipeline as plain functions: what each task of ``crm_daily`` calls.

Each takes the business date (and the run's parameters), does its stage through the package that
owns it, and returns a small JSON-able summary that Airflow keeps as the task's XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict
from typing import Any

from crm import lineage
from crm.settings import Settings, get_settings, private_files
from crm.warehouse import warehouse
from entrypoints.lineage_report import report

log = logging.getLogger(__name__)

# what scoring reads, besides the date's eligible pairs and features (ml.score)
SCORING_READS = ("marts.campaign_eligibility", "marts.customer_features", "marts.fct_campaign_contacts",
                 "marts.campaign_exclusions", "staging.stg_campaigns__campaigns",
                 "staging.stg_campaigns__campaign_channels", "staging.stg_campaigns__contact_policies")  # fmt: skip
ASSIGNMENTS = "marts.customer_campaign_assignments"
# what the snapshot carries besides the assignments (serving.publish): the console's figures and profiles
PUBLISHED_BESIDE = ("marts.campaign_performance", "marts.customer_360")


def run_settings(params: dict[str, Any] | None = None) -> Settings:
    """Settings for one run: the environment, with the run's sandbox parameters on top (and the
    files the task makes private to its user, however Airflow was started)."""
    private_files()
    settings = get_settings()
    params = params or {}
    changes = {}
    if params.get("customers"):
        changes["customers"] = int(params["customers"])
    if params.get("seed") is not None:
        changes["seed"] = int(params["seed"])
    settings = settings.replace(**changes) if changes else settings
    settings.ensure_dirs()
    return settings


def plan_extraction(business_date: dt.date, params: dict | None = None) -> list[dict]:
    """The day's extraction jobs (one mapped ``extract`` and ``gate_landing`` each); what an earlier
    plan of the date left in the landing zone and this one does not make is removed first."""
    from ingestion.landing import prepare_partitions
    from ingestion.plan import extraction_jobs

    settings = run_settings(params)
    jobs = extraction_jobs(business_date, settings)
    for path in prepare_partitions(jobs, business_date, settings):
        log.info("removed %s: an earlier plan's, not this one's", path)
    return [job.as_xcom() for job in jobs]


def extract(job: dict, business_date: dt.date, params: dict | None = None) -> dict:
    """One extraction job of the plan: an entity's snapshot (or its changes), or a slice of days."""
    from crm.integration_api import api_url
    from ingestion.extract import extract_job
    from ingestion.plan import ENDPOINTS, ExtractionJob

    settings = run_settings(params)
    result = {**asdict(extract_job(ExtractionJob.from_xcom(job), business_date, settings)), "job": job}
    entity = job["entity"]
    report([lineage.api(api_url(settings), ENDPOINTS[entity])], [lineage.files(settings.landing_dir / entity)])
    return result


def gate_landing(job: dict, business_date: dt.date, params: dict | None = None) -> dict:
    """The landing gate of one extraction job's file."""
    from expectations.runner import gate_landing as gate
    from ingestion.plan import ExtractionJob

    settings = run_settings(params)
    planned = ExtractionJob.from_xcom(job)
    report([lineage.files(settings.landing_dir / planned.entity)])  # also on a failed gate's event
    outcomes = gate(planned.entity, business_date, settings, planned.chunk)
    return {
        "entity": planned.entity,
        "job": planned.label,
        "expectations": len(outcomes),
        "warnings": sum(not o.success for o in outcomes),
    }


def load_raw(business_date: dt.date, params: dict | None = None) -> dict:
    from ingestion.raw_load import ENTITIES, load_business_date

    settings = run_settings(params)
    loaded = load_business_date(business_date, settings)
    report(
        [lineage.files(settings.landing_dir / entity) for entity in ENTITIES],
        lineage.tables(settings, [f"raw.{entity}" for entity in ENTITIES]),
    )
    return loaded


def gate_marts(business_date: dt.date, params: dict | None = None) -> dict:
    """The marts' gate: the date's ``customer_features`` validated where it is (GX's SQL data source
    on the warehouse), not loaded into the task."""
    from expectations.runner import gate, validate_date

    settings = run_settings(params)
    outcomes = validate_date(
        "customer_features",
        warehouse(settings),
        "marts.customer_features",
        "as_of_date",
        business_date,
        home=settings.home,
    )
    report(lineage.tables(settings, ["marts.customer_features"]))
    gate("customer_features", f"marts.customer_features as of {business_date}", outcomes)
    rows = next(o.observed for o in outcomes if o.expectation == "expect_table_row_count_to_be_between")
    return {"rows": rows, "expectations": len(outcomes)}


def ensure_model(business_date: dt.date, params: dict | None = None) -> dict:
    """The champion to score with. A local installation with none trains its first here, as
    ``crm_model_training`` would: the features its window lacks built, then the training."""
    from ml.score import scoring_champion

    settings = run_settings(params)
    ref = scoring_champion(settings)  # in production, none stops the run
    if ref is not None:
        return {"model_name": ref.name, "model_version": ref.version}
    log.info("no %s model is the champion: training a first one as of %s", settings.model.model_name, business_date)
    trained = train_first_model(business_date, settings, training_config(params))
    return {"model_name": trained.model_name, "model_version": trained.version}


def train_first_model(business_date: dt.date, settings: Settings, config):
    """``crm_model_training``'s two steps in one process: the window's missing features, then the
    training (``ml.train.TrainingResult``)."""
    from ml.train import train_and_register

    build_missing_features(business_date, settings, config)
    return train_and_register(business_date, settings, config)


def training_config(params: dict | None = None):
    """The model-training parameters of a run (``crm_model_training``'s params), defaults elsewhere."""
    from ml.train import TrainingConfig

    params = params or {}
    defaults = TrainingConfig()
    return TrainingConfig(
        window_days=int(params.get("training_window_days") or defaults.window_days),
        feature_step_days=int(params.get("feature_step_days") or defaults.feature_step_days),
        candidates=tuple(params.get("candidates") or defaults.candidates),
        promotion_margin=float(
            defaults.promotion_margin if params.get("promotion_margin") is None else params["promotion_margin"]
        ),
        weight_contacts=bool(params.get("weight_contacts", defaults.weight_contacts)),
    )


def backfill_features(business_date: dt.date, params: dict | None = None) -> dict:
    """The feature dates the training window lacks, built; what was built (rows per date)."""
    settings, config = run_settings(params), training_config(params)
    return {
        "business_date": business_date.isoformat(),
        "backfilled": build_missing_features(business_date, settings, config),
    }


SNAPSHOT_ENTITIES = ("customers", "accounts")  # what the features read as of a date (the rest is kept history)


def build_missing_features(business_date: dt.date, settings: Settings, config) -> dict[str, int]:
    """``marts.customer_features`` as of each date the training window lacks (``ml.training_set``),
    built the way ``crm_daily`` builds a day: customers and accounts extracted as of that date,
    gated, loaded, then dbt up to ``customer_features``; rows per date. Transactions and past
    contacts are in the warehouse already (the daily extraction keeps 180 and 365 days of them).
    dbt's views render one date at a time: the latest loaded date's are put back at the end."""
    from expectations.runner import gate_landing as gate
    from ingestion.extract import extract_entity
    from ingestion.raw_load import load_business_date
    from ml.training_set import feature_dates_missing

    window = config.window(business_date, settings)
    wh = warehouse(settings)
    with wh.connect() as session:
        dates = feature_dates_missing(session, window)
    if not dates:
        return {}
    log.info("backfilling features as of %d dates: %s", len(dates), ", ".join(map(str, dates)))
    target_path = settings.home / "dbt-target" / "feature-backfill"  # apart from the DAG's manifest
    counts: dict[str, int] = {}
    for day in dates:
        for entity in SNAPSHOT_ENTITIES:
            extract_entity(entity, day, settings)
            gate(entity, day, settings)
        load_business_date(day, settings, entities=SNAPSHOT_ENTITIES)
        _dbt_features(day, settings, target_path, "+customer_features")
        counts[day.isoformat()] = wh.scalar(
            "select count(*) from marts.customer_features where as_of_date = :d", {"d": day}
        )
        log.info("features as of %s backfilled: %d customers", day, counts[day.isoformat()])
    latest = wh.scalar("select max(_business_date) from raw.customers")
    _dbt_features(latest, settings, target_path, "+customer_features", "--exclude", "customer_features")
    return counts


class FeatureBackfillError(RuntimeError):
    pass


def _dbt_features(day: dt.date, settings: Settings, target_path, *select: str) -> None:
    from crm.warehouse import run_dbt_in_process

    ok, error = run_dbt_in_process(
        "run", "--select", *select,
        duckdb_path=settings.duckdb_path, business_date=day, target=settings.dbt_target, target_path=target_path,
        settings=settings,
    )  # fmt: skip
    if not ok:
        raise FeatureBackfillError(f"dbt could not build customer_features as of {day}: {error}")


def train_model(business_date: dt.date, params: dict | None = None) -> dict:
    from ml.train import train_and_register

    return asdict(train_and_register(business_date, run_settings(params), training_config(params)))


def score_and_assign(business_date: dt.date, params: dict | None = None) -> dict:
    from ml.score import score_and_assign as _score

    settings = run_settings(params)
    result = asdict(_score(business_date, settings))
    report(lineage.tables(settings, SCORING_READS), lineage.tables(settings, [ASSIGNMENTS]))
    return result


def publish(business_date: dt.date, params: dict | None = None) -> dict:
    from crm.services import ensure_redis
    from serving.publish import publish_snapshot

    settings = run_settings(params)
    force = bool((params or {}).get("force_publish"))
    result = asdict(publish_snapshot(business_date, settings, force=force))
    snapshot = lineage.snapshot(ensure_redis(settings), settings.serving.redis_prefix)
    report(lineage.tables(settings, [ASSIGNMENTS, *PUBLISHED_BESIDE]), [snapshot] if result["published"] else [])
    return result


def hand_off_executions(business_date: dt.date, published: dict, params: dict | None = None) -> dict:
    from serving.handoff import hand_off

    return hand_off(business_date, run_settings(params), bool(published.get("published")))


def publish_analysts(business_date: dt.date, params: dict | None = None) -> dict:
    from serving.analysts import publish as copy

    return copy(run_settings(params), business_date)


def purge_personal_data(business_date: dt.date, params: dict | None = None) -> dict:
    from ingestion.retention import purge_personal_data as purge

    return purge(business_date, run_settings(params))
