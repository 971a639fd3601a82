"""Run a suite from :mod:`expectations.suites` with GX Core's SQL data source, and gate on the result.

Every expectation is a query the engine answers where the rows are: the landed Parquet files
through an in-memory DuckDB (one batch per extraction job, however many rows), a mart on the
warehouse's own connections. Nothing is loaded into this process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from expectations.suites import SUITES

if TYPE_CHECKING:
    from crm.settings import Settings

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
    observed: Any = None  # a table-level expectation's observed value (the row count)


def _gx():
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def _detail(kind: str, result: dict, rows: int | None) -> str:
    """Counts only: unexpected values may be personal data and never reach the logs."""
    if "unexpected_count" in result:
        return f"{result.get('unexpected_count') or 0} of {result.get('element_count') or 0} rows unexpected"
    if kind == "unexpected_rows_expectation" and rows is not None:  # a query's rows, counted
        return f"{result.get('observed_value') or 0} of {rows} rows unexpected"
    return f"observed {result.get('observed_value')}"


@dataclass(frozen=True)
class Keep:
    """Where a validation's result is kept (``<home>/data-quality``, :mod:`expectations.data_docs`),
    for which business date, and what was validated."""

    home: Path
    business_date: dt.date
    batch: str


def _validate(suite_name: str, context: dict | None, url: str, engine_kwargs: dict[str, Any],
              batch_of: Callable[[Any], Any], rows: int | None = None, keep: Keep | None = None) -> list[Outcome]:  # fmt: skip
    """The suite on the batch ``batch_of`` takes from GX's SQL data source on ``url``: one outcome
    per expectation, in the suite's order; with ``keep``, the result kept for Data Docs."""
    from expectations import data_docs

    gx = _gx()
    ctx = data_docs.context(keep.home) if keep else gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):  # cosmetic only: no progress bars in task logs
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    with warnings.catch_warnings():  # GX suggests its engine-specific sources, which take no creator
        warnings.simplefilter("ignore")
        source = ctx.data_sources.add_sql(f"crm_{suite_name}", connection_string=url, kwargs=engine_kwargs,
                                          create_temp_table=False)  # fmt: skip
    try:
        batch = batch_of(source)
        suite = gx.ExpectationSuite(name=suite_name)
        for i, (cls, kwargs, critical) in enumerate(SUITES[suite_name](context or {})):
            # a query expectation names no column: the column it checks travels in its meta
            meta = {"critical": critical, "order": i, "column": kwargs.get("column_checked", kwargs.get("column"))}
            arguments = {k: v for k, v in kwargs.items() if k != "column_checked"}
            suite.add_expectation(getattr(gx.expectations, cls)(**arguments, meta=meta))
        validation = batch.validate(suite)
        results = sorted(validation.results, key=lambda r: r.expectation_config.meta["order"])
        if keep:  # before any verdict: a gate that fails is the one an analyst opens
            data_docs.keep(ctx, validation, suite_name, keep.business_date.isoformat(), keep.batch)
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
            f"{errors[0].expectation_config.meta.get('column')!r}: {first.get('exception_message')}"
        )
    outcomes = []
    for r in results:
        config, result = r.expectation_config, r.result or {}
        outcomes.append(Outcome(config.type, config.meta.get("column"), bool(config.meta.get("critical")),
                                bool(r.success), _detail(config.type, result, rows), result.get("observed_value")))  # fmt: skip
    return outcomes


def validate_date(suite_name: str, warehouse, table: str, column: str, day: dt.date,
                  context: dict | None = None, home: Path | None = None) -> list[Outcome]:  # fmt: skip
    """Validate the rows of ``table`` (``schema.name``) whose date ``column`` is ``day``, where they
    are: GX's SQL data source on the warehouse's own connections (``crm.warehouse.Warehouse``), a
    table asset with a daily batch. (Not a query asset: GX runs a query asset's query whole, and
    fetches every row, to learn its columns.) Outcomes in the suite's order; with ``home``, the
    result is kept there for Data Docs."""
    schema, name = table.split(".")
    url, kwargs = warehouse.engine_arguments(schema)

    def batch_of(source):
        from great_expectations.exceptions.exceptions import NoAvailableBatchesError, SqlAddBatchDefinitionError

        with warnings.catch_warnings():  # schema_name: GX's generic SQL source has no schema of its own
            warnings.simplefilter("ignore", DeprecationWarning)
            daily = source.add_table_asset(suite_name, table_name=name, schema_name=schema)
        try:
            return daily.add_batch_definition_daily("daily", column=column).get_batch(
                batch_parameters={"year": day.year, "month": day.month, "day": day.day}
            )
        except (NoAvailableBatchesError, SqlAddBatchDefinitionError) as error:
            raise GateFailed(f"data gate {suite_name!r}: {table} holds no rows as of {day}") from error

    return _validate(suite_name, context, url, kwargs, batch_of, keep=Keep(home, day, table) if home else None)


def validate_files(
    suite_name: str, files: list[Path], context: dict | None = None, memory_mb: int = 2048, keep: Keep | None = None
) -> list[Outcome]:
    """Validate the rows of the Parquet ``files`` as one batch, through an in-memory DuckDB that
    reads them in place (a view ``landed``): a key is unique across every file, DuckDB's
    ``memory_limit`` bounds the memory (it spills past it), the files are read once per query."""
    from crm.warehouse import parquet_view

    rows = sum(pq.read_metadata(f).num_rows for f in files)
    with parquet_view(files, memory_mb, "landed") as (url, kwargs):
        whole = lambda source: (  # noqa: E731
            source.add_table_asset(suite_name, table_name="landed")
            .add_batch_definition_whole_table("whole")
            .get_batch()
        )
        return _validate(suite_name, context, url, kwargs, whole, rows, keep)


def gate(suite_name: str, where: str, outcomes: list[Outcome]) -> list[Outcome]:
    """Raise :class:`GateFailed` when a critical expectation of ``outcomes`` failed; log the others."""
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
    entity: str, business_date: dt.date, settings: Settings, chunk: tuple[dt.date, dt.date] | None = None
) -> list[Outcome]:
    """Gate the landed partition of ``entity`` for ``business_date`` (with ``chunk``: the file of
    that slice of a history load only), every file of the job one batch."""
    from ingestion.landing import landed_rows, landed_since, landed_window, partition_files, partition_path

    if chunk is not None:
        files = [partition_path(settings.landing_dir, entity, business_date, chunk[0])]
    else:
        files = partition_files(settings.landing_dir, entity, business_date)
    if not files or not files[0].exists():
        raise FileNotFoundError(f"nothing landed of {entity} for {business_date}; run the extraction")
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
        "max_volume_change": settings.extraction.max_volume_change,
    }

    where = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
    batch = f"landing.{entity}" + (f".{chunk[0]}_{chunk[1]}" if chunk else "")
    keep = Keep(settings.home, business_date, batch)
    return gate(entity, where, validate_files(entity, files, context, settings.warehouse.duckdb_memory_mb, keep))
