"""The security review's findings (issue 25), each as the request an attacker or a careless insider
made, against ``crm serve`` over HTTP on a real Redis: what the audit trail records of it, the
sessions that end, and the quotas on every read of customers."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from assignments import assignments
from conftest import running_read_api
from fastapi.testclient import TestClient
from waits import wait_until

from crm.services import ensure_redis, stop_redis
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.api import create_app
from serving.audit import read_records
from serving.auth import issue_keys, sign_dev_token
from serving.publish import publish_snapshot

D = dt.date(2026, 11, 8)
ROWS = 100  # the day's segment rows a caller may read (pages and exports together)


@pytest.fixture(scope="module")
def review(settings):
    s = settings.replace(home=settings.home / "review", segment_rows_per_day=ROWS)
    s.ensure_dirs()
    write_assignments(D, assignments(60, [("CMP-A", "SMS")]), ModelRef("m", "1"), s)
    publish_snapshot(D, s)
    keys = issue_keys(s.api_keys_path)
    env = {"CRM_QUOTA_SEGMENT_ROWS_PER_DAY": str(ROWS)}
    try:
        with running_read_api(s.home, env) as url:
            yield url, s, keys
    finally:
        stop_redis(s)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def on_record(s, predicate) -> list[dict]:
    return [r for r in read_records(s.audit_dir) if predicate(r)]


def trail_size(s) -> int:
    return sum(p.stat().st_size for p in s.audit_dir.glob("api-*.jsonl"))


def test_a_forwarded_address_is_believed_from_the_configured_router_only(review):
    url, s, keys = review
    sales = {"X-API-Key": keys["sales"]}
    assert httpx.get(f"{url}/v1/customers/4/offers", headers={**sales, "X-Forwarded-For": "203.0.113.66"}).is_success
    (record,) = on_record(s, lambda r: r["what"] == "GET /v1/customers/4/offers")
    assert record["source"] == "127.0.0.1" and record["forwarded_for"] == "203.0.113.66"
    # behind a router the deployment names, its X-Forwarded-For is the caller
    with running_read_api(s.home, {"CRM_TRUSTED_PROXIES": "127.0.0.1/32"}) as behind:
        httpx.get(f"{behind}/v1/customers/5/offers", headers={**sales, "X-Forwarded-For": "203.0.113.66"})
    (record,) = on_record(s, lambda r: r["what"] == "GET /v1/customers/5/offers")
    assert record["source"] == "203.0.113.66"


def test_one_huge_header_cannot_grow_the_trail_by_more_than_a_capped_record(review):
    url, s, _ = review
    before = trail_size(s)
    resp = httpx.get(f"{url}/v1/customers/6/offers", headers={"X-Forwarded-For": "1" * 900_000})
    assert resp.status_code == 401
    assert trail_size(s) - before < 2_000
    (record,) = on_record(s, lambda r: r["what"] == "GET /v1/customers/6/offers")
    assert record["forwarded_for"].endswith("…(+899744)") and len(record["forwarded_for"]) < 300


def test_credentials_in_a_query_string_are_refused_and_never_written(review):
    url, s, keys = review
    token = sign_dev_token(s, "ana.torres", "marketing")
    for path, name, secret in (("/v1/customers/7/offers", "api_key", keys["sales"]),
                               ("/v1/campaigns", "access_token", token)):  # fmt: skip
        resp = httpx.get(f"{url}{path}", params={name: secret})
        assert resp.status_code == 400, path
        assert f"the query parameter {name} was not recorded" in resp.json()["detail"]
        (record,) = on_record(s, lambda r, path=path: r["what"].startswith(f"GET {path}?"))
        assert record["what"] == f"GET {path}?{name}=[redacted]" and record["status"] == 400
    trail = "".join(p.read_text() for p in s.audit_dir.glob("*.jsonl"))
    assert keys["sales"] not in trail and token not in trail


@pytest.mark.parametrize("subject", ["²", "99999999999999999999", "7" * 4400, "00012", "١٢", "１２"])
def test_a_customer_token_whose_subject_is_not_a_canonical_id_gets_403_on_record(review, subject):
    url, s, _ = review
    resp = httpx.get(f"{url}/v1/me/offers", headers=bearer(sign_dev_token(s, subject, "customer")))
    assert resp.status_code == 403 and "must be a customer id" in resp.json()["detail"]
    record = on_record(s, lambda r: r["what"] == "GET /v1/me/offers")[-1]
    assert record["status"] == 403 and record["who"] is None and record["customer_id"] is None
    # the one spelling of customer 12 reads it, in one quota bucket
    assert httpx.get(f"{url}/v1/me/offers", headers=bearer(sign_dev_token(s, "12", "customer"))).status_code == 200


def test_every_answer_that_names_a_customer_is_not_to_be_cached(review):
    url, s, keys = review
    marketing, sales = {"X-API-Key": keys["marketing"]}, {"X-API-Key": keys["sales"]}
    me = bearer(sign_dev_token(s, "3", "customer"))
    for path, headers in (("/v1/customers/3/offers", sales), ("/v1/me/offers", me), ("/v1/snapshot", marketing),
                          ("/v1/campaigns", marketing), ("/v1/customers/999999/offers", sales),
                          ("/v1/campaigns/CMP-A/customers?limit=1", marketing)):  # fmt: skip
        resp = httpx.get(f"{url}{path}", headers=headers)
        assert resp.headers["cache-control"] == "no-store", (path, resp.status_code)
    csv = httpx.get(f"{url}/v1/campaigns/CMP-A/customers", headers={**marketing, "Accept": "text/csv"})
    assert csv.status_code == 200 and csv.headers["cache-control"] == "no-store"


def test_segment_pages_and_exports_share_one_daily_quota_in_the_api_and_the_console(review):
    url, s, _ = review
    token = sign_dev_token(s, "pagina.todo", "marketing")
    segment = f"{url}/v1/campaigns/CMP-A/customers"
    with httpx.Client(base_url=url, follow_redirects=True) as console:
        signed_in = console.post("/console/sign-in", data={"token": token})
        assert signed_in.status_code == 200 and "CMP-A" in signed_in.text
        assert console.get("/console/campaigns/CMP-A").status_code == 200  # 50 customers on the page
        first = httpx.get(segment, params={"limit": 40}, headers=bearer(token))  # 90
        assert first.status_code == 200 and len(first.json()["customers"]) == 40
        export = httpx.get(segment, headers={**bearer(token), "Accept": "text/csv"})  # 60 more: refused whole
        assert export.status_code == 429 and f"quota of {ROWS} segment rows a day" in export.json()["detail"]
        assert 1 <= int(export.headers["Retry-After"]) <= 86_400
        assert httpx.get(segment, params={"limit": 10, "cursor": "40"}, headers=bearer(token)).status_code == 200
        over = httpx.get(segment, params={"limit": 1, "cursor": "50"}, headers=bearer(token))  # 101
        assert over.status_code == 429
        page = console.get("/console/campaigns/CMP-A")
        assert page.status_code == 429 and "segment rows a day used up" in page.text
    # another member of marketing has a quota of their own
    other = bearer(sign_dev_token(s, "otra.persona", "marketing"))
    assert httpx.get(segment, params={"limit": 60}, headers=other).status_code == 200


def test_sign_in_and_sign_out_refuse_requests_from_another_site(review):
    url, s, _ = review
    token = sign_dev_token(s, "ana.torres", "marketing")
    for forged in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        resp = httpx.post(f"{url}/console/sign-in", data={"token": token}, headers=forged)
        assert resp.status_code == 403 and "set-cookie" not in resp.headers, forged
        assert "came from another site" in resp.text
    with httpx.Client(base_url=url) as browser:
        own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        assert (
            browser.post("/console/sign-in", data={"token": token}, headers=own, follow_redirects=False).status_code
            == 303
        )
        refused = browser.post("/console/sign-out", headers={"Origin": "http://evil.example"}, follow_redirects=False)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert browser.get("/console/campaigns").status_code == 200  # still signed in
        assert httpx.get(f"{url}/v1/campaigns", headers=bearer(token)).status_code == 200  # and not revoked


def test_sign_out_ends_the_session_in_every_worker_until_the_token_expires(review):
    """A session signed out on one API worker: its cookie and the same token as a bearer are refused
    by that worker at once and by another worker (another process on the same Redis) within its
    sync."""
    url, s, _ = review
    token = sign_dev_token(s, "luis.quispe", "sales")
    with httpx.Client(base_url=url) as browser:
        browser.post("/console/sign-in", data={"token": token}, follow_redirects=False)
        cookie = browser.cookies["crm_console"]
        assert browser.get("/console/customers").status_code == 200
        with TestClient(create_app(ensure_redis(s), s)) as other_worker:
            assert other_worker.get("/v1/customers/3/offers", headers=bearer(token)).status_code == 200
            signed_out = browser.post("/console/sign-out", follow_redirects=False)
            assert signed_out.status_code == 303
            # the old cookie, replayed, and the token as a bearer: refused where it was signed out
            replay = httpx.get(f"{url}/console/customers", cookies={"crm_console": cookie}, follow_redirects=False)
            assert replay.status_code == 303 and replay.headers["location"] == "/console/sign-in"
            resp = httpx.get(f"{url}/v1/customers/3/offers", headers=bearer(token))
            assert resp.status_code == 401 and "signed out" in resp.json()["detail"]
            # the other worker learns of it with its next sync (every SYNC_S)
            refused = wait_until(
                lambda: other_worker.get("/v1/customers/3/offers", headers=bearer(token)),
                until=lambda resp: resp.status_code == 401,
                message="the other worker to learn of the sign-out (401)",
            )
            assert "signed out" in refused.json()["detail"]
    # another token of the same person still works: a sign-out ends one session, not the person
    assert httpx.get(
        f"{url}/v1/customers/3/offers", headers=bearer(sign_dev_token(s, "luis.quispe", "sales"))
    ).is_success


def test_a_call_that_ends_in_500_is_on_record_too(review):
    """A customer's offers corrupted in the cache (a code past the snapshot's dictionary): the
    look-up fails with 500, on the fast path and through FastAPI's route alike, and both calls are in
    the trail with their 500."""
    import redis

    from serving.codec import BUCKET
    from serving.keys import Keys

    url, s, keys = review
    client = redis.Redis.from_url(ensure_redis(s))
    k = Keys(s.serving.redis_prefix)
    sid = client.get(k.current).decode()
    client.hset(k.customer_bucket(sid, 59 // BUCKET), "59", bytes([200, 200, 200, 255, 255, 255, 0, 0, 0, 0, 0, 0]))
    sales = {"X-API-Key": keys["sales"]}
    for path in ("/v1/customers/59/offers", "/v1/customers/59/offers?page=1"):  # the fast path, then the route
        assert httpx.get(f"{url}{path}", headers=sales).status_code == 500, path
        (record,) = on_record(s, lambda r, path=path: r["what"] == f"GET {path}")
        assert record["status"] == 500 and record["who"] == "sales-integration" and record["customer_id"] == 59
