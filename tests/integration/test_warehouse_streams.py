"""A stream of a result that its reader leaves early (scoring refused the champion, a batch was bad)
closes with it, so the transaction's rollback works and the error a data engineer reads is the one
that stopped the task, not DuckDB's "connection has an open result"."""

from __future__ import annotations

import contextlib

import pytest

from crm.warehouse import warehouse


def test_a_stream_left_early_leaves_the_reason_it_stopped(settings):
    wh = warehouse(settings)
    with wh.begin() as session:
        session.connection.exec_driver_sql("create or replace table streamed as select range as i from range(500000)")
    with (
        pytest.raises(ValueError, match="the reason it stopped"),
        wh.begin() as session,
        contextlib.closing(session.batches("select i from streamed", rows=1000)) as stream,
    ):
        for _ in stream:
            raise ValueError("the reason it stopped")
    with wh.connect() as session:  # and the warehouse is usable after it
        assert session.rows("select count(*) from streamed")[0][0] == 500_000
