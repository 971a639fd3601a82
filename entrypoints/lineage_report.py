"""Lineage of a ``crm_daily`` run, reported through Airflow's OpenLineage provider.

Each task of the run says what it read and wrote (:func:`report`) to Airflow's hook lineage
collector; the provider puts those datasets on the task's own OpenLineage events, named by
:mod:`crm.lineage`. The dbt task (``entrypoints.dbt_lineage``) also sends one event per model
that dbt ran, each with the model's inputs and output, as OpenLineage's dbt integration reads them
from dbt's artifacts, and with the Airflow task run as its parent. Where the events go is Airflow's
``[openlineage] transport`` (a file per event under ``<CRM_HOME>/lineage/`` when Airflow runs here:
``crm.airflow_env``); with no transport set (or ``[openlineage] disabled``), nothing is collected.
"""

from __future__ import annotations

from collections.abc import Iterable


class _Stage:
    """What the collector keys a report by (one per process: a task reports once)."""


_STAGE = _Stage()


def report(inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Tell the running task's OpenLineage events what it read and wrote (asset URIs of
    :mod:`crm.lineage`); nothing when Airflow collects no lineage (no OpenLineage transport)."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    for uri in inputs:
        collector.add_input_asset(_STAGE, uri=uri)
    for uri in outputs:
        collector.add_output_asset(_STAGE, uri=uri)


def fresh_lineage(context=None) -> None:
    """A task's ``on_execute_callback``: forget what earlier tasks of this process reported. Each task
    of a deployed Airflow runs in a process of its own; ``airflow dags test`` (``make demo``) runs
    every task of the run in one, where the collector (one per process) would pile them up."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    get_hook_lineage_collector.cache_clear()
