"""How a DAG tells someone it failed: the arguments every DAG of the platform is declared with.

A run that fails (a task out of retries, or the run past its ``dagrun_timeout``) e-mails
``CRM_ALERT_EMAILS`` through Airflow's SMTP notifier and the Connection ``smtp_default``. In
production a DAG with nobody to tell does not load (``Settings.alert_emails``): the Airflow UI shows
the import error instead of a platform that fails in silence."""

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


def dag_alerting(settings: Settings) -> dict:
    """``dagrun_timeout`` and, when someone is to be told, ``on_failure_callback`` (an e-mail)."""
    arguments: dict = {"dagrun_timeout": dt.timedelta(hours=settings.dagrun_timeout_hours)}
    if settings.alert_emails:
        arguments["on_failure_callback"] = partial(email_failure, to=tuple(settings.alert_emails))
    return arguments


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
