"""Run a suite from :mod:`expectations.suites` on a batch with GX Core, and gate on the result."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq

from expectations.suites import SUITES

log = logging.getLogger(__name__)


class GateFailed(RuntimeError):
    """A critical expectation failed; the message names the suite, column and how many rows."""


@dataclass(frozen=True)
class Outcome:
    expectation: str
    column: str | None
    critical: bool
    success: bool
    detail: str


def _gx():
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def validate_dataframe(suite_name: str, df: pd.DataFrame, context: dict | None = None) -> list[Outcome]:
    """Validate ``df`` against suite ``suite_name``; returns one outcome per expectation."""
    gx = _gx()
    specs = SUITES[suite_name](context or {})
    ctx = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):  # cosmetic only: no progress bars in task logs
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch = (
        ctx.data_sources.add_pandas(f"crm_{suite_name}")
        .add_dataframe_asset(name=suite_name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for cls, kwargs, critical in specs:
        suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"critical": critical}))
    result = batch.validate(suite)
    outcomes = []
    for res in result.results:
        cfg = res.expectation_config
        r = res.result or {}
        # counts only: unexpected values may be personal data and never reach the logs
        detail = (
            f"{r.get('unexpected_count')} of {r.get('element_count')} rows unexpected"
            if "unexpected_count" in r
            else f"observed {r.get('observed_value')}"
        )
        outcomes.append(
            Outcome(
                cfg.type,
                cfg.kwargs.get("column"),
                bool(cfg.meta.get("critical")),
                bool(res.success),
                detail,
            )
        )
    return outcomes


def gate(suite_name: str, df: pd.DataFrame, where: str, context: dict | None = None) -> list[Outcome]:
    """Validate and raise :class:`GateFailed` when a critical expectation fails."""
    outcomes = validate_dataframe(suite_name, df, context)
    failed = [o for o in outcomes if not o.success]
    for o in failed:
        log.warning(
            "%s %s on %s(%s): %s",
            "FAILED" if o.critical else "warning",
            suite_name,
            o.expectation,
            o.column,
            o.detail,
        )
    critical = [o for o in failed if o.critical]
    if critical:
        lines = "; ".join(f"{o.expectation} on column {o.column!r}: {o.detail}" for o in critical)
        raise GateFailed(f"data gate {suite_name!r} failed for {where}: {lines}")
    log.info("data gate %s passed for %s (%d expectations)", suite_name, where, len(outcomes))
    return outcomes


def _days_in(span: tuple[dt.date, dt.date]) -> int:
    return (span[1] - span[0]).days + 1


def gate_landing(entity: str, business_date: dt.date, settings=None) -> list[Outcome]:
    """Gate the landed partition of ``entity`` for ``business_date``."""
    from crm.settings import get_settings
    from ingestion.extract import landed_since, landed_window, partition_path

    settings = settings or get_settings()
    path = partition_path(settings.landing_dir, entity, business_date)
    df = pd.read_parquet(path)
    span = landed_window(entity, business_date, settings)
    day_before = business_date - dt.timedelta(days=1)
    previous = partition_path(settings.landing_dir, entity, day_before)
    previous_rows = pq.read_metadata(previous).num_rows if previous.exists() else None
    if previous_rows is not None and span is not None:  # a delta beside a history load: per day
        before = landed_window(entity, day_before, settings)
        previous_rows = round(previous_rows * _days_in(span) / _days_in(before))
    changes_only = landed_since(entity, business_date, settings) is not None
    if changes_only or landed_since(entity, day_before, settings):
        previous_rows = None  # a snapshot's day of changes has no volume to compare with a whole one
    context = {
        "business_date": business_date,
        "window_start": span[0] if span else business_date,
        "adult_born_by": business_date.replace(year=business_date.year - 18, day=min(business_date.day, 28)),
        "previous_rows": previous_rows,
        "changes_only": changes_only,
        "max_volume_change": settings.max_volume_change,
    }
    return gate(entity, df, f"{path}", context)
