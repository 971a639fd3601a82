"""How a DAG tells someone it failed: the arguments every DAG of the platform is declared with.

A run that fails (a task out of retries, or the run past its ``dagrun_timeout``) e-mails
``CRM_ALERT_EMAILS`` through Airflow's SMTP notifier and the Connection ``smtp_default``. In
production a DAG with nobody to tell does not load (``Settings.alert_emails``): the Airflow UI shows
the import error instead of a platform that fails in silence."""

from __future__ import annotations

import datetime as dt

from crm.settings import Settings

# what every failure callback's context holds (the run's last task, when there is one)
SUBJECT = "[crm] {{ dag.dag_id }} failed{% if ds is defined and ds %} for {{ ds }}{% endif %}: {{ run_id }}"
BODY = (
    "<p><b>{{ dag.dag_id }}</b> run <code>{{ run_id }}</code> failed"
    "{% if ti is defined %} at task <b>{{ ti.task_id }}</b>{% endif %}{% if reason %} ({{ reason }}){% endif %}.</p>"
    "<p>The failed task's log is in the Airflow UI (Dags, {{ dag.dag_id }}, the run, the red task). "
    "Until a rerun publishes, sales and the app read the last published snapshot while it lasts.</p>"
)


def dag_alerting(settings: Settings) -> dict:
    """``dagrun_timeout`` and, when someone is to be told, ``on_failure_callback`` (an e-mail)."""
    arguments: dict = {"dagrun_timeout": dt.timedelta(hours=settings.dagrun_timeout_hours)}
    if settings.alert_emails:
        arguments["on_failure_callback"] = _failure_email(settings.alert_emails)
    return arguments


def _failure_email(to: list[str]):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class FailureEmail(SmtpNotifier):
        """Airflow's SMTP notifier, rendering its templates wherever the callback runs: the DAG
        processor hands it the DAG, ``airflow dags test`` the scheduler's serialized copy, which has
        no template environment of its own (a sandboxed one is used then)."""

        def get_template_env(self, dag=None):
            return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    return FailureEmail(to=to, subject=SUBJECT, html_content=BODY, smtp_conn_id="smtp_default")
