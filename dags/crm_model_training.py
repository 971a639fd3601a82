"""
### crm_model_training: a new version of the campaign-propensity model, promoted only when better

Weekly, after the `crm_daily` of a Saturday (`CRM_TRAINING_WEEKDAY`) has written its assignment
(the asset `crm_assignment`), and on demand with parameters. **as_of** decides the business date
**D** it trains as of: the param `business_date`; else the assignment event's date, when it falls
on the training weekday (on other days the run stops there, its later tasks skipped); else, for a
run by date, the day before it.

1. **backfill_features**: the point-in-time training set needs, for every past contact, the
   customer's features from before it (`marts.customer_features`, at most `feature_step_days`
   older). Dates the feature store lacks (a new installation, a gap in the daily runs) are built
   the way `crm_daily` builds them: customers and accounts extracted as of that date from the
   integration API, then the dbt models up to `customer_features`.
2. **train_and_promote**: the contacts of the last `training_window_days` whose outcome is final
   (their day loaded by the run that reads it for the last time, `CRM_LATE_ARRIVAL_DAYS` after it:
   decision 0029), split by contact date (fit, calibration, and the latest 20% as the holdout); each
   of the `candidates` (`logistic_regression`, `gradient_boosting`, `per_campaign_logistic`),
   calibrated, measured on the holdout and logged to the MLflow experiment `crm-campaign-propensity` (ROC AUC, PR AUC, Brier,
   top-decile lift, AUC per campaign; calibration plot, feature importance, training-data
   profile; signature and input example), with what the gate reads: **capture at capacity** (each
   live campaign's acceptance rate in the top of its held-out contacts that its daily capacity
   covers, weighted by capacity, offer value and campaign weight, over a perfect ranking's) and the
   **calibration error**. The candidate that captures most is registered as a new version of
   `crm-campaign-propensity`; it becomes **champion** only when its capture at capacity beats the
   current champion's on the same holdout by `promotion_margin` and its calibration error is no
   worse than the champion's by more than 0.01, otherwise **challenger**: a version that loses
   capture is never promoted. The decision and its reason are in this task's log, the run's tags
   and the version's tags.

`crm_daily` scores with whatever holds `champion` the next morning. To go back to an earlier
version, move the alias in MLflow (`MlflowClient().set_registered_model_alias`).
Params `customers` and `seed` size the embedded sandbox bank only, as in `crm_daily`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from crm.settings import WAREHOUSE_POOL, get_settings
from entrypoints.alerts import dag_alerting
from entrypoints.assets import ASSIGNMENT
from entrypoints.dag_defaults import default_args

# ml.train.CANDIDATES, spelled here: a DAG file imports no stage at parse time (test_dag_integrity checks they agree)
CANDIDATES = ("logistic_regression", "gradient_boosting", "per_campaign_logistic")

settings = get_settings()


@dag(
    dag_id="crm_model_training",
    doc_md=__doc__,
    schedule=[ASSIGNMENT],  # after crm_daily's assignment; as_of keeps the training weekday's
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    **dag_alerting(settings),  # a failed or overlong run e-mails CRM_ALERT_EMAILS
    max_active_runs=1,
    tags=["crm", "training"],
    default_args=default_args(settings, retry_delay=dt.timedelta(minutes=5)),
    params={
        "business_date": Param(
            None, type=["null", "string"], format="date",
            description="train as of this date (default: the assignment's date, or the day before the run's date)",
        ),
        "training_window_days": Param(
            84, type="integer", minimum=14, maximum=365, description="contacts of this many days before D"
        ),
        "feature_step_days": Param(
            7, type="integer", minimum=1, maximum=31,
            description="features at most this many days before a contact; missing dates are backfilled on this grid",
        ),
        "candidates": Param(
            list(CANDIDATES), type="array", items={"type": "string", "enum": list(CANDIDATES)}, minItems=1,
            description="the estimators to train and compare",
        ),
        "promotion_margin": Param(
            0.005, type="number", minimum=0, maximum=0.5,
            description="capture at capacity (0-1) a new version must gain over the champion on the holdout to replace it",
        ),
        "weight_contacts": Param(
            False, type="boolean",
            description="weigh each contact by the inverse of the probability its offer was drawn with (decision 0030: "
            "off, it cost capture in the closed loop)",
        ),
        "customers": Param(settings.sandbox.customers, type="integer", minimum=1, description="sandbox bank size"),
        "seed": Param(settings.sandbox.seed, type="integer", description="sandbox bank seed"),
    },
)  # fmt: skip
def crm_model_training():
    @task.short_circuit
    def as_of(ds: str | None = None, params: dict | None = None) -> str | None:
        """The business date to train as of; none (the rest is skipped) on a day that does not train."""
        import logging

        from entrypoints.assets import training_as_of

        day, why = training_as_of(get_current_context(), params or {}, ds, settings.orchestration.training_weekday)
        logging.getLogger(__name__).info("training as of %s: %s", day, why)
        return day.isoformat() if day else None

    @task(pool=WAREHOUSE_POOL, pool_slots=settings.warehouse_pool_slots)  # it may build features: a writer
    def backfill_features(day: str, params: dict | None = None) -> dict:
        from entrypoints.tasks import backfill_features as run

        return run(dt.date.fromisoformat(day), params)

    @task(pool=WAREHOUSE_POOL, pool_slots=settings.warehouse_pool_slots)  # it may build features: a writer
    def train_and_promote(day: str, params: dict | None = None) -> dict:
        from entrypoints.tasks import train_model as run

        return run(dt.date.fromisoformat(day), params)

    day = as_of()
    backfill_features(day) >> train_and_promote(day)


crm_model_training()
