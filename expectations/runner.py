"""Run a suite from :mod:`expectations.suites` on a batch with GX Core, and gate on the result."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import warnings
from collections.abc import Iterator
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


TABLE_LEVEL = "ExpectTable"  # expectations on the whole table (row count): checked once, on every row


class _Suite:
    """A suite made ready once (GX context, pandas data source, expectations), then run on as many
    dataframes as needed: a landed file is validated a batch of rows at a time."""

    def __init__(self, suite_name: str, specs: list):
        gx = _gx()
        ctx = gx.get_context(mode="ephemeral")
        with contextlib.suppress(Exception):  # cosmetic only: no progress bars in task logs
            ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
        self.definition = (
            ctx.data_sources.add_pandas(f"crm_{suite_name}")
            .add_dataframe_asset(name=suite_name)
            .add_batch_definition_whole_dataframe("whole")
        )
        self.suite = gx.ExpectationSuite(name=suite_name)
        for cls, kwargs, critical in specs:
            self.suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"critical": critical}))

    def run(self, df: pd.DataFrame) -> list[tuple[str, str | None, bool, bool, dict]]:
        """(expectation, column, critical, success, result) per expectation, in the suite's order."""
        result = self.definition.get_batch(batch_parameters={"dataframe": df}).validate(self.suite)
        return [
            (
                res.expectation_config.type,
                res.expectation_config.kwargs.get("column"),
                bool(res.expectation_config.meta.get("critical")),
                bool(res.success),
                res.result or {},
            )
            for res in result.results
        ]


def _outcomes(runs: list[list[tuple]]) -> list[Outcome]:
    """One outcome per expectation from its results on every batch: it holds when it held on each;
    the counts are summed. Counts only: unexpected values may be personal data and never reach the logs."""
    outcomes = []
    for results in zip(*runs, strict=True):
        kind, column, critical = results[0][:3]
        found = [r[4] for r in results]
        if all("unexpected_count" in r for r in found):
            detail = (
                f"{sum(r.get('unexpected_count') or 0 for r in found)} of "
                f"{sum(r.get('element_count') or 0 for r in found)} rows unexpected"
            )
        else:
            detail = f"observed {found[-1].get('observed_value')}"
        outcomes.append(Outcome(kind, column, critical, all(r[3] for r in results), detail))
    return outcomes


def validate_dataframe(suite_name: str, df: pd.DataFrame, context: dict | None = None) -> list[Outcome]:
    """Validate ``df`` against suite ``suite_name``; returns one outcome per expectation."""
    return _outcomes([_Suite(suite_name, SUITES[suite_name](context or {})).run(df)])


def validate_query(suite_name: str, warehouse, query: str, context: dict | None = None) -> list[Outcome]:
    """Validate the rows of ``query`` where they are, through GX's SQL data source on the warehouse's
    own connections (``crm.warehouse.Warehouse``): each expectation is a query the warehouse answers,
    nothing is loaded into this process. Outcomes in the suite's order."""
    gx = _gx()
    specs = SUITES[suite_name](context or {})
    ctx = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    url, kwargs = warehouse.engine_arguments()
    with warnings.catch_warnings():  # GX suggests its engine-specific sources, which take no creator
        warnings.simplefilter("ignore")
        source = ctx.data_sources.add_sql(f"crm_{suite_name}", connection_string=url, kwargs=kwargs,
                                          create_temp_table=False)  # fmt: skip
    try:
        batch = source.add_query_asset(suite_name, query=query).add_batch_definition_whole_table("whole").get_batch()
        suite = gx.ExpectationSuite(name=suite_name)
        for i, (cls, kwargs_, critical) in enumerate(specs):
            suite.add_expectation(getattr(gx.expectations, cls)(**kwargs_, meta={"critical": critical, "order": i}))
        results = sorted(batch.validate(suite).results, key=lambda r: r.expectation_config.meta["order"])
    finally:
        source.get_engine().dispose()
        with contextlib.suppress(Exception):
            source.get_execution_engine().engine.dispose()
    errors = [r for r in results if r.exception_info and any(
        e.get("raised_exception") for e in (r.exception_info.values() if "raised_exception" not in r.exception_info
                                            else [r.exception_info]))]  # fmt: skip
    if errors:
        info = errors[0].exception_info
        first = info if "exception_message" in info else next(iter(info.values()))
        raise GateFailed(
            f"data gate {suite_name!r} could not evaluate {errors[0].expectation_config.type} on "
            f"{errors[0].expectation_config.kwargs.get('column')!r}: {first.get('exception_message')}"
        )
    return _outcomes([[(r.expectation_config.type, r.expectation_config.kwargs.get("column"),
                        bool(r.expectation_config.meta.get("critical")), bool(r.success), r.result or {})
                       for r in results]])  # fmt: skip


def validate_batches(
    suite_name: str, batches: Iterator[pd.DataFrame], rows: int, context: dict | None = None
) -> list[Outcome]:
    """Validate a table too big to hold at once, given as ``batches`` of its ``rows`` rows: the
    table-level expectations (row count) once, on an index of ``rows`` (no data), the others on
    each batch. Memory: one batch. Outcomes in the suite's order."""
    specs = SUITES[suite_name](context or {})
    table = [s for s in specs if s[0].startswith(TABLE_LEVEL)]
    columns = [s for s in specs if not s[0].startswith(TABLE_LEVEL)]
    outcomes = _outcomes([_Suite(suite_name, table).run(pd.DataFrame(index=pd.RangeIndex(rows)))]) if table else []
    if columns:
        suite = _Suite(suite_name, columns)
        runs = [suite.run(df) for df in batches]
        outcomes += _outcomes(runs) if runs else []
    return outcomes


def gate(
    suite_name: str, df: pd.DataFrame | None, where: str, context: dict | None = None, outcomes: list | None = None
) -> list[Outcome]:
    """Validate (or take the ``outcomes`` of a validation in batches) and raise :class:`GateFailed`
    when a critical expectation fails."""
    outcomes = outcomes if outcomes is not None else validate_dataframe(suite_name, df, context)
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


def gate_landing(
    entity: str, business_date: dt.date, settings=None, chunk: tuple[dt.date, dt.date] | None = None
) -> list[Outcome]:
    """Gate the landed partition of ``entity`` for ``business_date`` (with ``chunk``: the file of
    that slice of a history load only), ``CRM_GATE_BATCH_ROWS`` rows at a time."""
    from crm.settings import get_settings
    from ingestion.extract import landed_rows, landed_since, landed_window, partition_files, partition_path

    settings = settings or get_settings()
    if chunk is not None:
        files = [partition_path(settings.landing_dir, entity, business_date, chunk[0])]
    else:
        files = partition_files(settings.landing_dir, entity, business_date)
    if not files or not files[0].exists():
        raise FileNotFoundError(f"nothing landed of {entity} for {business_date}; run the extraction")
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    span = chunk or landed_window(entity, business_date, settings)
    day_before = business_date - dt.timedelta(days=1)
    previous_rows = landed_rows(settings.landing_dir, entity, day_before)
    if previous_rows is not None and span is not None:  # a delta beside a history load: per day
        before = landed_window(entity, day_before, settings)
        previous_rows = round(previous_rows * _days_in(span) / _days_in(before))
    changes_only = landed_since(entity, business_date, settings) is not None
    if changes_only or landed_since(entity, day_before, settings):
        previous_rows = None  # a snapshot's day of changes has no volume to compare with a whole one
    context = {
        "business_date": business_date,
        "window_start": span[0] if span else business_date,
        "window_end": span[1] if span else business_date,
        "adult_born_by": business_date.replace(year=business_date.year - 18, day=min(business_date.day, 28)),
        "previous_rows": previous_rows,
        "changes_only": changes_only,
        "max_volume_change": settings.max_volume_change,
    }

    def batches() -> Iterator[pd.DataFrame]:
        if rows == 0:  # nothing changed on the day: the column expectations hold on no rows
            yield pq.read_table(files[0]).to_pandas()
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=settings.gate_batch_rows):
                yield batch.to_pandas()

    where = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
    outcomes = validate_batches(entity, batches(), rows, context)
    return gate(entity, None, where, context, outcomes)


def gate_job(job: dict, business_date: dt.date, settings=None) -> list[Outcome]:
    """Gate what one extraction job (``ingestion.extract.slices``) landed: a mapped ``gate_landing`` task."""
    from ingestion.extract import job_dates

    return gate_landing(job["entity"], business_date, settings, job_dates(job.get("chunk")))
