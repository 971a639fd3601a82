"""The Great Expectations gate on landed partitions: what it refuses, and that it says what and where."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from expectations.runner import GateFailed, gate_landing
from ingestion.extract import extract_entity
from ingestion.landing import partition_path

D = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def landed(settings):
    s = settings.replace(home=settings.home / "gate", customers=300, seed=7)
    s.ensure_dirs()
    for day in (D - dt.timedelta(days=1), D):
        extract_entity("customers", day, s)
    yield s
    from crm.services import stop_sandbox

    stop_sandbox(s)


def _rewrite(s, change) -> None:
    path = partition_path(s.landing_dir, "customers", D)
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _document(customer_id: int, value: str):
    """A rewrite that gives ``customer_id`` the document number ``value``."""

    def change(t: pa.Table) -> pa.Table:
        docs = pc.if_else(pc.equal(t["customer_id"], customer_id), value, t["document_number"])
        return t.set_column(t.schema.get_field_index("document_number"), "document_number", docs)

    return change


def _birth_date(customer_id: int, value: dt.date):
    """A rewrite that gives ``customer_id`` the birth date ``value``."""

    def change(t: pa.Table) -> pa.Table:
        born = pc.if_else(
            pc.equal(t["customer_id"], customer_id), pa.scalar(value, t["birth_date"].type), t["birth_date"]
        )
        return t.set_column(t.schema.get_field_index("birth_date"), "birth_date", born)

    return change


def test_a_good_landing_passes(landed):
    outcomes = gate_landing("customers", D, landed)
    assert all(o.success for o in outcomes if o.critical)
    assert any(o.expectation == "expect_table_row_count_to_be_between" for o in outcomes)


def test_a_landing_far_smaller_than_the_day_before_is_refused(landed):
    original = pq.read_table(partition_path(landed.landing_dir, "customers", D))
    try:
        _rewrite(landed, lambda t: t.slice(0, t.num_rows // 3))  # a third of yesterday's
        with pytest.raises(GateFailed, match=r"'customers' failed .*expect_table_row_count_to_be_between"):
            gate_landing("customers", D, landed)
    finally:
        pq.write_table(original, partition_path(landed.landing_dir, "customers", D))


def test_a_document_number_that_is_neither_dni_nor_ruc_is_refused_without_showing_it(landed):
    original = pq.read_table(partition_path(landed.landing_dir, "customers", D))
    try:
        _rewrite(landed, _document(5, "99123456789"))
        with pytest.raises(GateFailed) as err:
            gate_landing("customers", D, landed)
    finally:
        pq.write_table(original, partition_path(landed.landing_dir, "customers", D))
    assert f"column 'document_number': 1 of {original.num_rows} rows unexpected" in str(err.value)
    assert "99123456789" not in str(err.value)  # personal data never reaches the message


def test_a_landing_in_several_files_is_gated_as_one_a_key_repeated_across_them_included(landed):
    """A history load lands in several files (one per slice); the gate reads a partition's files in
    place as one relation: the row count is the partition's, and a customer in two files is a
    duplicate, counted against every row."""
    path = partition_path(landed.landing_dir, "customers", D)
    original = pq.read_table(path)
    half = original.num_rows // 2
    first, second = original.slice(0, half), original.slice(half)
    last, first_id = second["customer_id"][second.num_rows - 1], first["customer_id"][0]
    ids = pc.if_else(pc.equal(second["customer_id"], last), first_id, second["customer_id"])
    repeated = second.set_column(second.schema.get_field_index("customer_id"), "customer_id", ids)
    parts = [path.with_name("data-2026-11-01.parquet"), path.with_name("data-2026-11-02.parquet")]
    try:
        path.unlink()
        pq.write_table(first, parts[0])
        pq.write_table(second, parts[1])
        row_count = [o for o in gate_landing("customers", D, landed) if o.expectation.startswith("expect_table_row")]
        assert row_count and row_count[0].success and str(original.num_rows) in row_count[0].detail
        pq.write_table(repeated, parts[1])
        with pytest.raises(GateFailed) as err:
            gate_landing("customers", D, landed)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
        pq.write_table(original, path)
    assert f"column 'customer_id': 2 of {original.num_rows} rows unexpected" in str(err.value)


def test_every_validation_is_kept_and_the_data_docs_show_a_refusal_offline(landed):
    """``make docs`` (``crm docs``): Great Expectations' Data Docs of every gate's kept result, beside
    dbt's docs, in a browser with no network but this machine's: the refused landing is there,
    marked failed, with its count and never the value that failed (a minor's birth date)."""
    import os
    import subprocess
    import sys

    import httpx
    from browser import chromium
    from waits import wait_until

    from crm.services import free_port
    from crm.settings import REPO_ROOT

    original = pq.read_table(partition_path(landed.landing_dir, "customers", D))
    try:
        _rewrite(landed, _birth_date(5, dt.date(2015, 3, 17)))
        with pytest.raises(GateFailed, match="birth_date"):
            gate_landing("customers", D, landed)
    finally:
        pq.write_table(original, partition_path(landed.landing_dir, "customers", D))
    kept = list((landed.home / "data-quality" / "validations" / "customers" / str(D)).rglob("*.json"))
    assert kept and not [p for p in kept if "2015-03-17" in p.read_text()]

    port = free_port()
    env = {**os.environ, "CRM_HOME": str(landed.home)}
    docs = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "docs", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(httpx, url), message="crm docs serving", timeout=180)
        with chromium() as browser:
            context = browser.context()
            page = context.new_page()
            page.goto(url)
            page.get_by_role("link", name="Data quality").click()
            page.locator("table a", has_text="customers").first.wait_for(timeout=20_000)
            assert page.evaluate("typeof jQuery.fn.bootstrapTable") == "function"  # its scripts, served here
            # the newest validation of the customers' landing for D: the refused one
            failed = sorted(
                p for p in (landed.home / "docs" / "data-quality" / "validations" / "customers").rglob("*.html")
            )
            page.goto(f"{url}/data-quality/{failed[-1].relative_to(landed.home / 'docs' / 'data-quality')}")
            body = page.locator("body")
            body.get_by_text("Failed").first.wait_for(timeout=20_000)
            text = body.inner_text()
            assert "birth_date" in text and "2015-03-17" not in text
            page.goto(f"{url}/dbt/index.html#!/model/model.crm.customer_features")
            page.locator("h1", has_text="customer_features").first.wait_for(timeout=30_000)
            assert browser.outside == [], browser.outside
            context.close()
    finally:
        docs.terminate()
        docs.wait(timeout=30)


def _status(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
