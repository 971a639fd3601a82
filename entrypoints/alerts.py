"""How a DAG tells someone it failed: the arguments every DAG of the platform is declared with.

A run that fails (a task out of retries, or the run past its ``dagrun_timeout``) e-mails
``CRM_ALERT_EMAILS`` through Airflow's SMTP notifier and the Connection ``smtp_default``. In
production a DAG with nobody to tell does not load (``Settings.alert_emails``): the Airflow UI shows
the import error instead of a platform that fails in silence.

``crm_daily`` also has a deadline (Airflow's deadline alert): its business date's snapshot must be
live by ``CRM_SNAPSHOT_DEADLINE_LIMA`` the next morning. A run that is late, stuck in a queue or
failed with nobody rerunning it is then e-mailed once more, with what sales and the app are reading
instead. A run that succeeds in time leaves no deadline behind (Airflow drops it)."""

from __future__ import annotations

import datetime as dt
from functools import partial

from crm.settings import Settings

# what every failure callback's context holds (the run's last task, when there is one)
SUBJECT = "[crm] {{ dag.dag_id }} failed{% if ds is defined and ds %} for {{ ds }}{% endif %}: {{ run_id }}"
BODY = (
    "<p><b>{{ dag.dag_id }}</b> run <code>{{ run_id }}</code> failed"
    "{% if ti is defined %} at task <b>{{ ti.task_id }}</b>{% endif %}{% if reason %} ({{ reason }}){% endif %}.</p>"
    "<p>The failed task's log is in the Airflow UI (Dags, {{ dag.dag_id }}, the run, the red task).</p>"
    "{% if dag.dag_id == 'crm_daily' %}<p>Until a rerun publishes, sales and the app read the last "
    "published snapshot while it lasts.</p>{% endif %}"
)


def dag_alerting(settings: Settings, snapshot_deadline: bool = False) -> dict:
    """``dagrun_timeout`` and, when someone is to be told, ``on_failure_callback`` (an e-mail) and,
    for the DAG that publishes the snapshot, the deadline by which it must be live."""
    arguments: dict = {"dagrun_timeout": dt.timedelta(hours=settings.orchestration.dagrun_timeout_hours)}
    if settings.alert_emails:
        arguments["on_failure_callback"] = partial(email_failure, to=tuple(settings.alert_emails))
        if snapshot_deadline:
            arguments["deadline"] = snapshot_deadline_alert(settings)
    return arguments


def snapshot_deadline_alert(settings: Settings):
    """The business date D's run (logical date D 00:00 in Lima, a zone without daylight saving) must
    have D's snapshot live by ``CRM_SNAPSHOT_DEADLINE_LIMA`` on D + 1."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    by = settings.orchestration.snapshot_deadline_lima
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=dt.timedelta(days=1, hours=by.hour, minutes=by.minute),
        # in the triggerer, which reads Connections (Redis, SMTP) for the callbacks it runs; an
        # executor's callback has no task's identity, and the Execution API refuses it any Connection
        callback=AsyncCallback(snapshot_deadline_missed, kwargs={"to": list(settings.alert_emails)}),
        name="snapshot published",
    )


async def snapshot_deadline_missed(context: dict, to: list[str]) -> str:
    """The deadline passed with the run not done (the triggerer runs this): see ``check_snapshot_deadline``."""
    import asyncio

    return await asyncio.to_thread(check_snapshot_deadline, context, to)


def check_snapshot_deadline(context: dict, to: list[str]) -> str:
    """E-mail that the run's date has no snapshot live, unless what it was to publish is live anyway
    (a rerun in another run published it, or a later date's) or the run is a backfill's (an old date,
    whose snapshot is never published over a later one). Returns what it did, for the callback's log."""
    from zoneinfo import ZoneInfo

    from crm.settings import get_settings
    from serving.publish import live_snapshot_meta

    lima = ZoneInfo("America/Lima")
    run = context["dag_run"]
    if run.get("run_type") == "backfill":
        return f"{run['dag_run_id']}: a backfill's date, no snapshot expected"
    business_date = dt.datetime.fromisoformat(run["logical_date"]).astimezone(lima).date()
    try:
        live = live_snapshot_meta(get_settings())
    except Exception as error:  # the cache out of reach is worse news, not a reason for silence
        live, unread = None, f"could not be read ({type(error).__name__}: {error})"
    else:
        unread = None
    if live and dt.date.fromisoformat(live["business_date"]) >= business_date:
        return f"{run['dag_run_id']}: the snapshot of {live['business_date']} is live"
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    deadline = context["deadline"]["deadline_time"]
    deadline = dt.datetime.fromisoformat(str(deadline)).astimezone(lima).strftime("%Y-%m-%d %H:%M")
    if unread:
        reading = f"whatever the cache holds: it {unread}"
    else:
        reading = f"the snapshot of {live['business_date']}" if live else "no snapshot at all: offers calls fail"
    subject = f"[crm] no offers snapshot for {business_date} by {deadline} Lima: crm_daily is {run.get('state')}"
    body = (
        f"<p><b>crm_daily</b> run <code>{run['dag_run_id']}</code> for {business_date} has not published its "
        f"snapshot by the deadline ({deadline} Lima); the run is <b>{run.get('state')}</b>.</p>"
        f"<p>Sales and the app are reading {reading}.</p>"
        "<p>See the run in the Airflow UI (Dags, crm_daily); once it is fixed, clear the failed task "
        "or trigger crm_daily for the date.</p>"
    )
    with SmtpHook(smtp_conn_id="smtp_default") as smtp:
        smtp.send_email_smtp(to=list(to), subject=subject, html_content=body)
    return f"{run['dag_run_id']}: e-mailed {len(to)}"


def email_failure(context, to: tuple[str, ...]) -> None:
    """E-mail one failed run. A notifier renders its subject and body into itself, once: each call
    gets a new one, or the DAG processor, running several runs' callbacks with one parse of the
    file, would send every later run the first one's e-mail."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class FailureEmail(SmtpNotifier):
        """Airflow's SMTP notifier, rendering its templates wherever the callback runs: the DAG
        processor hands it the DAG, ``airflow dags test`` the scheduler's serialized copy, which has
        no template environment of its own (a sandboxed one is used then)."""

        def get_template_env(self, dag=None):
            return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    FailureEmail(to=list(to), subject=SUBJECT, html_content=BODY, smtp_conn_id="smtp_default")(context)
