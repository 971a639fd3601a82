"""
### crm_retention: clear personal data goes when its time is up (Ley 29733)

After each `crm_daily` (on its asset `crm_offers_snapshot`: when the day's run has published, or
refused to publish an older date), and daily at 04:00 Lima whatever became of it (the law's clock
does not wait for a failed daily run). For the business date **D** of the newest snapshot event
that started it (a backfill's events aside), or else the run's date (the 04:00 run's, or `airflow
dags test crm_retention D`),
**purge_personal_data** deletes
what holds names, document numbers or dates of birth in clear for business dates before
D - `CRM_RAW_RETENTION_DAYS` (35): the rows of `raw.customers`, the customers' landing partitions
(`landing/customers/business_date=...`) and every quarantine partition (the raw records a contract
refused). Its log and its return value give what it removed, by count.

The marts keep their history: they hold no clear personal data (staging masks names and document
numbers; no mart holds a date of birth). A business date older than the window can still be
rerun or backfilled: its extraction brings the data again from the integration API.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from crm.settings import WAREHOUSE_POOL, get_settings
from entrypoints.alerts import dag_alerting
from entrypoints.assets import SNAPSHOT
from entrypoints.dag_defaults import default_args

settings = get_settings()


@dag(
    dag_id="crm_retention",
    doc_md=__doc__,
    # after crm_daily has produced the day; and at 04:00 Lima whatever happened to it: the law's
    # deadline for clear personal data does not wait for a failed daily run
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * *", timezone="America/Lima"), assets=[SNAPSHOT]
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    **dag_alerting(settings),  # a failed or overlong run e-mails CRM_ALERT_EMAILS
    max_active_runs=1,
    tags=["crm", "ops"],
    default_args=default_args(settings, retry_delay=dt.timedelta(minutes=5)),
)
def crm_retention():
    @task(pool=WAREHOUSE_POOL)
    def purge_personal_data(ds: str | None = None, params: dict | None = None) -> dict:
        from entrypoints.assets import triggering_date
        from entrypoints.tasks import purge_personal_data as run

        day = triggering_date(get_current_context()) or (dt.date.fromisoformat(ds) if ds else None)
        if day is None:
            raise ValueError(
                "crm_retention needs a business date: run it by date, or on a daily (not a backfill's) snapshot event"
            )
        return run(day, params)

    purge_personal_data()


crm_retention()
