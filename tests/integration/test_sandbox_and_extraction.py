"""The sandbox bank over real HTTP, and the extraction that lands it."""

from __future__ import annotations

import datetime as dt

import httpx
import pyarrow.parquet as pq
import pytest

from crm.integration_api import IntegrationApiClient, IntegrationApiError
from crm.services import ensure_sandbox
from ingestion.extract import extract_entity
from ingestion.landing import partition_path
from models.core_banking import ENTITIES
from sandbox.oracle import Oracle

D = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def sandbox(settings):
    return ensure_sandbox(customers=300, seed=7, settings=settings)


def _all(sandbox, path, params, page_size):
    with IntegrationApiClient(sandbox.url, sandbox.client_id, sandbox.client_secret) as client:
        return [r for page in client.pages(path, params, page_size) for r in page]


def test_requests_without_a_valid_token_are_refused(sandbox):
    assert httpx.get(f"{sandbox.url}/v1/customers", params={"as_of": D}).status_code == 401
    bad = httpx.post(
        f"{sandbox.url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": "wrong"},
    )
    assert bad.status_code == 401
    headers = {"Authorization": "Bearer 9999999999.forged"}
    assert httpx.get(f"{sandbox.url}/v1/customers", params={"as_of": D}, headers=headers).status_code == 401
    with pytest.raises(IntegrationApiError, match="401"):
        IntegrationApiClient(sandbox.url, sandbox.client_id, "wrong").pages(
            "/v1/customers", {"as_of": D}, 10
        ).__next__()


@pytest.mark.parametrize("page_size", [7, 1000])
def test_pages_cover_every_customer_once_whatever_the_page_size(sandbox, page_size):
    customers = _all(sandbox, "/v1/customers", {"as_of": D}, page_size)
    ids = [c["customer_id"] for c in customers]
    assert ids == sorted(set(ids)) and len(ids) == Oracle(300, 7).truth("customers", as_of=D).records


def test_the_bank_grows_and_changes_day_by_day(sandbox):
    """New customers join, consents change: months later the bank has more customers, and asking
    for what changed since gives exactly the customers whose record differs."""
    later = D + dt.timedelta(days=150)
    before = {c["customer_id"]: c for c in _all(sandbox, "/v1/customers", {"as_of": D}, 500)}
    after = {c["customer_id"]: c for c in _all(sandbox, "/v1/customers", {"as_of": later}, 500)}
    assert set(before) < set(after)  # nobody left, somebody joined
    joined = set(after) - set(before)
    assert all(D < dt.date.fromisoformat(after[c]["created_on"]) <= later for c in joined)
    since = D + dt.timedelta(days=1)
    changed = _all(sandbox, "/v1/customers", {"as_of": later, "updated_since": since}, 500)
    really = {c for c in after if c not in before or after[c] != before[c]}
    assert {c["customer_id"] for c in changed} == really
    assert any(c not in joined for c in really)  # consents changed for customers who were there


def test_control_totals_match_the_listings(sandbox):
    params = {"date_from": D - dt.timedelta(days=6), "date_to": D}
    with IntegrationApiClient(sandbox.url, sandbox.client_id, sandbox.client_secret) as client:
        for path, p in [("/v1/customers", {"as_of": D}), ("/v1/accounts", {"as_of": D}), ("/v1/transactions", params)]:
            assert client.control_total(path, p) == len(_all(sandbox, path, p, 1000)), path


def test_same_request_same_records(sandbox):
    params = {"date_from": D - dt.timedelta(days=6), "date_to": D}
    first = _all(sandbox, "/v1/transactions", params, 97)
    again = _all(sandbox, "/v1/transactions", params, 500)
    assert first == again
    assert len({t["transaction_id"] for t in first}) == len(first) > 300
    assert all(D - dt.timedelta(days=6) <= dt.date.fromisoformat(t["booking_date"]) <= D for t in first)


def test_every_sandbox_record_honours_its_contract(sandbox):
    for entity, path, params in [
        ("customers", "/v1/customers", {"as_of": D}),
        ("accounts", "/v1/accounts", {"as_of": D}),
        ("campaign_responses", "/v1/campaign-responses", {"date_from": D - dt.timedelta(days=200), "date_to": D}),
    ]:
        records = _all(sandbox, path, params, 500)
        assert records, entity
        for record in records:
            ENTITIES[entity].model_validate(record)


def test_extraction_lands_every_record_once_and_a_rerun_replaces_the_partition(sandbox, settings, monkeypatch):
    monkeypatch.setenv("CRM_SANDBOX_CUSTOMERS", "300")
    monkeypatch.setenv("CRM_SANDBOX_SEED", "7")
    from crm.settings import get_settings

    s = get_settings()
    first = extract_entity("accounts", D, s)
    path = partition_path(s.landing_dir, "accounts", D)
    table = pq.read_table(path)
    assert first.received == first.landed == table.num_rows
    assert table.schema.names == list(ENTITIES["accounts"].model_fields)  # the contract's columns, no more
    assert len(set(table.column("account_id").to_pylist())) == table.num_rows
    again = extract_entity("accounts", D, s)
    assert again.landed == first.landed
    assert pq.read_table(path).equals(table)
    assert not list(path.parent.glob("*.tmp-*"))


def test_the_dedup_spills_instead_of_failing_on_millions_of_records(tmp_path):
    """About 7,000,000 transactions (a 50,000-customer bank's 180 days) failed the dedup with
    DuckDB's OutOfMemoryException at a 24 MB limit; under the default bound it spills and lands
    every record once (issue 15)."""
    import duckdb

    from ingestion.extract import _dedup_into

    parts = []
    for i in range(3):  # pages from three workers; the last one repeats the first 1,000 records
        part = tmp_path / f"part-{i}.parquet"
        duckdb.sql(
            f"""copy (select 'T' || lpad(cast(i as varchar), 16, '0') as transaction_id, i % 997 as account_id,
                             cast(i as double) / 7 as amount, 'POS_PURCHASE' as type
                      from range({i}, 6000000, 3) t(i)
                      union all select 'T' || lpad(cast(i as varchar), 16, '0'), i % 997, -1, 'DUPLICATE'
                      from range(0, {3000 if i == 2 else 0}, 3) t(i))
                to '{part}' (format parquet)"""
        )
        parts.append(part)
    target = tmp_path / "landing" / "transactions.parquet"
    (target.parent / "_staging").mkdir(parents=True)
    assert _dedup_into(parts, "transaction_id", target, None) == 6_000_000
    counts = duckdb.sql(f"select count(distinct transaction_id), count(*) filter (type = 'DUPLICATE') from '{target}'")
    assert counts.fetchall() == [(6_000_000, 0)]  # each record once, the earliest page's
