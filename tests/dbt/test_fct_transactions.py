"""fct_transactions is built whole once, then each run replaces its business date's day only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
from dbt_warehouse import empty_raw_warehouse, run_dbt

D = dt.date(2026, 11, 27)


def _build(tmp_path: Path, business_date: dt.date) -> None:
    done = run_dbt(tmp_path, "build", "--select", "+fct_transactions", "--exclude", "test_type:unit",
                   business_date=business_date)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]


def _raw(con, rows: list[tuple]) -> None:
    con.execute("delete from raw.transactions")
    for tid, day, amount in rows:
        con.execute(
            "insert into raw.transactions values (?, 10, 1, ?, 'POS_PURCHASE', 'GROCERY', ?, 'PEN', ?)",
            [tid, day, amount, day],
        )


def _fct(tmp_path: Path) -> dict[str, tuple]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        rows = con.execute("select transaction_id, booking_date, amount from marts.fct_transactions").fetchall()
    return {tid: (day, float(amount)) for tid, day, amount in rows}


def test_each_run_replaces_its_day_only(tmp_path):
    with duckdb.connect(str(empty_raw_warehouse(tmp_path))) as con:
        _raw(con, [("T1", D - dt.timedelta(days=1), -10.0), ("T2", D, -20.0)])
    _build(tmp_path, D)  # first build: the whole history up to D
    assert _fct(tmp_path) == {"T1": (D - dt.timedelta(days=1), -10.0), "T2": (D, -20.0)}

    nxt = D + dt.timedelta(days=1)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        # the source changed a past day (T1) and brought the next one (T3): only the run's day lands
        _raw(con, [("T1", D - dt.timedelta(days=1), -99.0), ("T2", D, -20.0), ("T3", nxt, -30.0)])
    _build(tmp_path, nxt)
    assert _fct(tmp_path) == {"T1": (D - dt.timedelta(days=1), -10.0), "T2": (D, -20.0), "T3": (nxt, -30.0)}

    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        _raw(con, [("T1", D - dt.timedelta(days=1), -99.0), ("T2b", D, -25.0), ("T3", nxt, -30.0)])
    _build(tmp_path, D)  # a backfill of D replaces D's day, and nothing else
    assert _fct(tmp_path) == {"T1": (D - dt.timedelta(days=1), -10.0), "T2b": (D, -25.0), "T3": (nxt, -30.0)}
