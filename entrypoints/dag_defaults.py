"""What every task of the project's DAGs shares, declared once: its owner, its retries and their
delay, its timeout (from the settings, so a deployment changes them without editing a DAG)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crm.settings import Settings

OWNER = "crm-data"  # the on-call data engineers: who the Airflow UI names for every task


def default_args(settings: Settings, retry_delay: dt.timedelta | None = None, **extra: Any) -> dict[str, Any]:
    """A DAG's ``default_args``: ``retry_delay`` is ``CRM_TASK_RETRY_DELAY_S`` unless the DAG
    gives its own; ``extra`` adds what only that DAG sets (a callback, say)."""
    return {
        "owner": OWNER,
        "retries": settings.orchestration.task_retries,
        "retry_delay": retry_delay or dt.timedelta(seconds=settings.orchestration.task_retry_delay_s),
        "execution_timeout": dt.timedelta(minutes=settings.orchestration.task_timeout_minutes),
        **extra,
    }
