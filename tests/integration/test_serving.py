"""The cache load against a real Redis server, and the read API over it."""

from __future__ import annotations

import datetime as dt
import json
import time

import pandas as pd
import pytest
import redis
from assignments import assignments
from fastapi.testclient import TestClient
from waits import wait_until

from crm.services import ensure_redis
from crm.warehouse import warehouse
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.api import create_app
from serving.auth import issue_keys
from serving.keys import Keys
from serving.publish import publish_snapshot

D1 = dt.date(2026, 11, 1)
D2 = dt.date(2026, 11, 2)


PLAN = [("CMP-A", "SMS"), ("CMP-B", "PHONE")]


def _assignments(n_customers: int, offset: int = 0) -> pd.DataFrame:
    return assignments(n_customers, PLAN, offset)


@pytest.fixture(scope="module")
def published(settings):
    """D1: customers 1-50 with offers, 51-55 in the control arm (logged, never served); D2 newer."""
    day_one = _assignments(55)
    day_one.loc[day_one["customer_id"] > 50, "arm"] = "control"
    write_assignments(D1, day_one, ModelRef("crm-campaign-propensity", "3"), settings)
    write_assignments(D2, _assignments(40, offset=5), ModelRef("crm-campaign-propensity", "4"), settings)
    return publish_snapshot(D1, settings)


@pytest.fixture(scope="module")
def api(settings, published):
    keys = issue_keys(settings.api_keys_path)
    with TestClient(create_app(ensure_redis(settings), settings)) as client:
        yield client, keys


def get(api, path, role=None, **params):
    client, keys = api
    headers = {"X-API-Key": keys[role]} if role else {}
    return client.get(path, headers=headers, params=params)


def test_offers_are_served_best_first_with_the_snapshot_id(api, published):
    resp = get(api, "/v1/customers/7/offers", "sales")
    assert resp.status_code == 200
    body = resp.json()
    assert body["snapshot_id"] == published.snapshot_id == resp.headers["X-Snapshot-Id"]
    assert [o["campaign_id"] for o in body["offers"]] == ["CMP-A", "CMP-B"]
    assert {"propensity", "priority", "reasons"} <= set(body["offers"][0])


def test_the_control_arm_is_held_out_of_every_read(api):
    """A customer of the day's control arm has an offer logged in the warehouse and none served:
    not to sales, not in a segment, not in a campaign's count."""
    assert get(api, "/v1/customers/52/offers", "sales").status_code == 404
    assert get(api, "/v1/customers/50/offers", "sales").status_code == 200
    segment = get(api, "/v1/campaigns/CMP-A/customers", "marketing", limit=100).json()
    assert max(c["customer_id"] for c in segment["customers"]) == 50 and segment["total"] == 50


def test_keys_are_required_and_roles_enforced(api):
    assert get(api, "/v1/customers/7/offers").status_code == 401
    client, _ = api
    assert client.get("/v1/customers/7/offers", headers={"X-API-Key": "made-up"}).status_code == 401
    assert get(api, "/v1/campaigns/CMP-A/customers", "sales").status_code == 403
    assert get(api, "/v1/campaigns", "sales").status_code == 200


def test_unknown_and_malformed_ids(api):
    assert get(api, "/v1/customers/999999/offers", "sales").status_code == 404
    for malformed in ("abc", "0", "-7", "1000000000001", "7.5"):
        resp = get(api, f"/v1/customers/{malformed}/offers", "sales")
        assert resp.status_code == 422, malformed
        assert resp.json()["detail"][0]["loc"] == ["path", "customer_id"]
    # an id written with leading zeros is still that customer
    assert (
        get(api, "/v1/customers/007/offers", "sales").json()["offers"]
        == get(api, "/v1/customers/7/offers", "sales").json()["offers"]
    )
    assert get(api, "/v1/campaigns/CMP-NOPE/customers", "marketing").status_code == 404


def test_campaigns_list_the_assigned_counts(api):
    campaigns = {c["campaign_id"]: c for c in get(api, "/v1/campaigns", "marketing").json()["campaigns"]}
    assert campaigns["CMP-A"]["assigned"] == 50
    assert campaigns["CMP-B"]["channels"] == {"PHONE": 50}


def test_segments_page_in_priority_order_and_filter_by_channel(api):
    seen, cursor = [], None
    while True:
        params = {"limit": 15, **({"cursor": cursor} if cursor else {})}
        body = get(api, "/v1/campaigns/CMP-A/customers", "marketing", **params).json()
        seen += body["customers"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 50 == len({c["customer_id"] for c in seen})
    priorities = [c["priority"] for c in seen]
    assert priorities == sorted(priorities, reverse=True)
    assert get(api, "/v1/campaigns/CMP-A/customers", "marketing", channel="PHONE").status_code == 404 or (
        get(api, "/v1/campaigns/CMP-A/customers", "marketing", channel="PHONE").json()["total"] == 0
    )
    assert get(api, "/v1/campaigns/CMP-B/customers", "marketing", channel="PHONE").json()["total"] == 50


def test_customer_lookups_are_audited_without_other_personal_data(api, settings):
    from serving.audit import read_records

    get(api, "/v1/customers/8/offers", "sales")
    record = [r for r in read_records(settings.audit_dir) if r["what"] == "GET /v1/customers/8/offers"][-1]
    assert record["role"] == "sales" and record["status"] == 200
    assert record["kind"] == "integration" and record["who"] == "sales-integration"
    assert record["customer_id"] == 8 and record["snapshot_id"]
    assert set(record) == {"at", "kind", "who", "role", "credential", "what", "customer_id", "accept", "status",
                           "source", "forwarded_for", "snapshot_id", "seq", "kid", "prev", "mac"}  # fmt: skip


def test_a_new_business_date_switches_the_snapshot_and_drains_the_previous(api, settings, published):
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    keys = Keys(settings.serving.redis_prefix)
    second = publish_snapshot(D2, settings)
    assert second.snapshot_id != published.snapshot_id
    assert second.previous_snapshot_id == published.snapshot_id
    assert r.get(keys.current) == second.snapshot_id
    # the previous snapshot expires within the drain period (an export that started on it finishes)
    previous = list(r.scan_iter(match=keys.snapshot_pattern(published.snapshot_id)))
    assert previous and all(0 < r.ttl(k) <= settings.serving.snapshot_drain_seconds for k in previous)
    # the API re-reads the live snapshot id within a fraction of a second
    body = wait_until(
        lambda: get(api, "/v1/customers/45/offers", "sales").json(),
        until=lambda body: body.get("snapshot_id") != published.snapshot_id,
        message=f"the API to answer from a snapshot other than {published.snapshot_id}",
    )
    assert body["snapshot_id"] == second.snapshot_id
    assert get(api, "/v1/customers/2/offers", "sales").status_code == 404  # not in D2's assignments
    # fresh for 24 hours, then served (flagged stale) for a 6-hour grace, then gone
    assert 29 * 3600 < r.ttl(keys.customer_bucket(second.snapshot_id, 0)) <= 30 * 3600
    meta = get(api, "/v1/snapshot", "marketing").json()["snapshot"]
    assert meta["business_date"] == "2026-11-02" and meta["model_version"] == "4" and meta["customers"] == 40
    assert meta["fresh"] is True and 0 <= meta["age_seconds"] < 600


def test_readyz_answers_503_without_a_live_snapshot(api, settings):
    client, _ = api
    assert client.get("/readyz").status_code == 200
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    keys = Keys(settings.serving.redis_prefix)
    current = r.get(keys.current)
    r.delete(keys.current)
    try:
        assert client.get("/readyz").status_code == 503
        # the API re-reads the live snapshot id within a fraction of a second; until then it answers
        # from the snapshot it knew
        offers = wait_until(
            lambda: get(api, "/v1/customers/45/offers", "sales"),
            until=lambda resp: resp.status_code != 200,
            message="the offers to stop answering 200 once no snapshot is live",
        )
        assert offers.status_code == 503
    finally:
        r.set(keys.current, current)


def test_publishing_a_date_without_assignments_fails_and_keeps_the_live_snapshot(settings):
    from serving.publish import PublishError

    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    before = r.get(Keys(settings.serving.redis_prefix).current)
    with pytest.raises(PublishError, match="no assignments for 2020-01-01"):
        publish_snapshot(dt.date(2020, 1, 1), settings)
    assert r.get(Keys(settings.serving.redis_prefix).current) == before


def test_a_snapshot_takes_many_reason_combinations_made_of_few_reasons(settings):
    """Each offer's reasons are a combination (features that pushed its score, the channel's rule):
    435 combinations of 31 reasons fit the snapshot, which stores each reason once."""
    from itertools import combinations

    from serving.snapshot_source import read_assignments

    texts = [f"reason {k}" for k in range(30)]
    combos = [json.dumps([a, b, "SMS: the campaign's preferred channel"]) for a, b in combinations(texts, 2)]
    df = assignments(len(combos), [("CMP-A", "SMS")]).assign(reasons=combos)
    day = dt.date(2026, 9, 1)
    write_assignments(day, df, ModelRef("m", "1"), settings)
    read = read_assignments(day, settings)
    assert len(read.dictionary.reasons) == 31
    decoded = [[read.dictionary.reasons[r] for r in row if r != 255] for row in read.reasons]
    assert decoded == [json.loads(c) for c in combos]


def test_warehouse_keeps_each_business_date(settings):
    rows = dict(
        warehouse(settings).rows(
            "select business_date, count(*) from marts.customer_campaign_assignments group by business_date"
        )
    )
    assert rows[D1] == 110 and rows[D2] == 80  # the control arm's rows are kept in the warehouse


def test_the_publish_guard_refuses_a_shrunken_audience_unless_forced(api, settings):
    from serving.publish import PublishRefused

    d3 = dt.date(2026, 11, 3)
    write_assignments(d3, _assignments(10), ModelRef("crm-campaign-propensity", "4"), settings)
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    keys = Keys(settings.serving.redis_prefix)
    live = r.get(keys.current)
    with pytest.raises(PublishRefused, match=r"serves 10 customers, 75% fewer than the live snapshot"):
        publish_snapshot(d3, settings)
    assert r.get(keys.current) == live
    assert get(api, "/v1/customers/45/offers", "sales").json()["snapshot_id"] == live
    assert not list(r.scan_iter(match=f"{settings.serving.redis_prefix}:snap:20261103-*"))  # the refused one is gone
    forced = publish_snapshot(d3, settings, force=True)
    assert r.get(keys.current) == forced.snapshot_id


def test_marketing_can_pull_a_whole_segment_as_csv(api):
    client, keys = api
    resp = client.get("/v1/campaigns/CMP-B/customers", headers={"X-API-Key": keys["marketing"], "Accept": "text/csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    lines = resp.text.strip().splitlines()
    assert lines[0] == "position,customer_id,offer_id,channel,priority"
    rows = [line.split(",") for line in lines[1:]]
    live = get(api, "/v1/campaigns/CMP-B/customers", "marketing").json()["total"]
    assert len(rows) == live
    assert [int(r[0]) for r in rows] == list(range(1, live + 1))
    assert [float(r[4]) for r in rows] == sorted((float(r[4]) for r in rows), reverse=True)


def test_a_connected_read_api_keeps_the_embedded_redis_up_when_a_run_ends(api, settings):
    """make serve running while make demo refreshes the cache: the demo must not stop serve's Redis."""
    from crm.services import running_services, stop_services_started_since

    client, _ = api
    assert client.get("/readyz").status_code == 200  # the API holds its connection
    as_if_the_run_started_redis = running_services(settings) - {"redis"}
    stopped = stop_services_started_since(as_if_the_run_started_redis, settings)
    assert "redis" not in stopped
    assert "redis" in running_services(settings)
    assert client.get("/readyz").status_code == 200


def test_metrics_count_requests_by_route_and_report_the_snapshot_age(api):
    client, _ = api
    get(api, "/v1/customers/45/offers", "sales")
    get(api, "/v1/customers/46/offers")  # 401
    text = client.get("/metrics").text
    assert 'crm_api_requests_total{endpoint="/v1/customers/{customer_id}/offers",method="GET",status="200"}' in text
    assert 'status="401"' in text
    assert "/v1/customers/45/" not in text  # route templates only: no customer id in the metrics
    age = float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("crm_snapshot_age_seconds ")))
    assert 0 <= age < 3600
    assert "crm_api_request_seconds_bucket" in text


def test_a_snapshot_past_its_ttl_keeps_serving_flagged_stale_until_its_grace_ends(api, settings):
    d4 = dt.date(2026, 11, 4)
    write_assignments(d4, _assignments(12), ModelRef("crm-campaign-propensity", "4"), settings)
    loaded_long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)  # the next daily run is late
    before = get(api, "/v1/snapshot", "marketing").json()["snapshot"]["snapshot_id"]
    late = publish_snapshot(d4, settings, now=loaded_long_ago, force=True)
    # the API re-reads the live snapshot id within a fraction of a second
    meta = wait_until(
        lambda: get(api, "/v1/snapshot", "marketing").json()["snapshot"],
        until=lambda meta: meta["snapshot_id"] != before,
        message=f"/v1/snapshot to name a snapshot other than {before}",
    )
    assert meta["snapshot_id"] == late.snapshot_id and meta["fresh"] is False
    assert get(api, "/v1/customers/3/offers", "sales").status_code == 200
    client, _ = api
    assert client.get("/readyz").json() == {"ready": True, "snapshot_id": late.snapshot_id, "fresh": False}
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    assert 4 * 3600 < r.ttl(Keys(settings.serving.redis_prefix).current) <= 5 * 3600  # 24 h + 6 h grace - 25 h


def test_readyz_and_reads_answer_503_while_redis_is_unreachable(settings, tmp_path):
    keys = issue_keys(settings.api_keys_path, roles=("sales",))
    with TestClient(create_app(f"unix://{tmp_path}/no-redis.sock", settings)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "redis unreachable"
        offers = client.get("/v1/customers/1/offers", headers={"X-API-Key": keys["sales"]})
        assert offers.status_code == 503


def test_an_older_date_leaves_the_newer_live_snapshot_serving_unless_forced(api, settings):
    """A backfill publishes a past date: its assignment stays in the warehouse, the live snapshot of a
    newer date keeps serving, and the result says why; force_publish moves the cache back on purpose."""
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    keys = Keys(settings.serving.redis_prefix)
    live = r.get(keys.current)
    assert live > "20261101"  # a snapshot of a date after D1 is live
    d1_snapshots = set(r.scan_iter(match=f"{settings.serving.redis_prefix}:snap:20261101-*:meta"))
    backfilled = publish_snapshot(D1, settings)
    assert not backfilled.published and backfilled.previous_snapshot_id == live
    assert f"the live snapshot {live} is for 2026-11-0" in backfilled.reason and "force_publish" in backfilled.reason
    assert r.get(keys.current) == live
    assert get(api, "/v1/customers/3/offers", "sales").json()["snapshot_id"] == live
    assert (
        set(r.scan_iter(match=f"{settings.serving.redis_prefix}:snap:20261101-*:meta")) == d1_snapshots
    )  # none written
    forced = publish_snapshot(D1, settings, force=True)
    assert forced.published and r.get(keys.current) == forced.snapshot_id


def test_a_stalled_redis_gives_503_within_the_deadline_not_a_hung_request(settings, tmp_path):
    """Redis stops answering (the process frozen, its connections open): every read gives 503 after
    CRM_REDIS_DEADLINE_S instead of waiting for ever, and reads recover when Redis does."""
    import os
    import signal
    import threading

    s = settings.replace(home=tmp_path, redis_deadline_s=0.5)
    s.ensure_dirs()
    url = ensure_redis(s)
    write_assignments(D1, _assignments(20), ModelRef("crm-campaign-propensity", "3"), s)
    publish_snapshot(D1, s)
    keys = issue_keys(s.api_keys_path)
    redis_pid = int((s.run_dir / "redis.pid").read_text())
    calls = [("/v1/customers/3/offers", "sales"), ("/v1/campaigns", "marketing"), ("/v1/snapshot", "marketing"),
             ("/v1/campaigns/CMP-A/customers", "marketing"), ("/readyz", None)]  # fmt: skip
    with TestClient(create_app(url, s)) as client:
        assert client.get("/v1/customers/3/offers", headers={"X-API-Key": keys["sales"]}).status_code == 200
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            reader = client.app.state.reader
            wait_until(
                lambda: reader.until - time.monotonic(),  # the seconds the API's cached snapshot id has left
                until=lambda left: left <= 0,
                message="the API's cached snapshot id to expire (so that every call reaches Redis)",
            )
            answers: dict[str, int] = {}

            def ask() -> None:
                for path, role in calls:
                    headers = {"X-API-Key": keys[role]} if role else {}
                    answers[path] = client.get(path, headers=headers).status_code

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            asker.join(timeout=60)
            assert not asker.is_alive(), f"a request hung on the stalled Redis (answered so far: {answers})"
            assert answers == {path: 503 for path, _ in calls}
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        assert client.get("/v1/customers/3/offers", headers={"X-API-Key": keys["sales"]}).status_code == 200
    from crm.services import stop_redis

    stop_redis(s)
