"""Cosmos's ``dbt build`` with one OpenLineage event per model (``entrypoints.lineage_report`` says where
the events go)."""

from __future__ import annotations

import logging

from cosmos.operators.local import DbtBuildLocalOperator

log = logging.getLogger(__name__)


class DbtBuildWithLineage(DbtBuildLocalOperator):
    """Cosmos's ``dbt build`` whose OpenLineage events name every model.

    Cosmos gives the task's event the union of every model's inputs and outputs, which loses which
    model read what. Once dbt has run (failed or not), the task sends each model's own event (dbt's
    integration, from ``run_results.json`` and the manifest), its parent the task's run, so a
    lineage graph has the edges between models as dbt has them. They go from the task itself, not
    from the provider's listener, whose handler has ``[openlineage] execution_timeout`` (10 s) for
    the task's own event."""

    def execute(self, context, **kwargs):
        try:
            return super().execute(context, **kwargs)
        finally:
            self._send_model_events(context["ti"])

    def _send_model_events(self, task_instance) -> None:
        from airflow.providers.openlineage.conf import is_disabled

        events = getattr(self, "openlineage_events_completes", None) or []
        if not events or is_disabled():
            return
        try:
            _emit_model_events(events, task_instance)
        except Exception:  # lineage never fails a run
            log.warning("could not send the per-model lineage events", exc_info=True)


def _emit_model_events(events, task_instance) -> None:
    import attrs
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.providers.openlineage.plugins.macros import lineage_job_name, lineage_job_namespace, lineage_run_id
    from openlineage.client.facet_v2 import parent_run

    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=lineage_run_id(task_instance)),
        job=parent_run.Job(namespace=lineage_job_namespace(), name=lineage_job_name(task_instance)),
    )
    adapter = get_openlineage_listener().adapter
    for event in events:
        run = attrs.evolve(event.run, facets={**event.run.facets, "parent": parent})
        adapter.emit(attrs.evolve(event, run=run))
    log.info("sent the lineage of %d dbt models", len(events))
