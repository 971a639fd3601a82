"""Quotas per caller against a real Redis: a burst of look-ups past the minute's quota gets 429 with
Retry-After, exports past the day's too, and two API workers share the counts."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from assignments import published_home
from fastapi.testclient import TestClient
from waits import fresh_minute, wait_until, wait_until_async

from crm.services import ensure_redis
from serving.api import create_app
from serving.audit import read_records
from serving.auth import issue_keys, sign_dev_token

D = dt.date(2026, 11, 6)
LOOKUPS, EXPORTS = 5, 2
CALLER = "integration:sales-integration"  # whom the sales key stands for (serving.quotas.caller)


@pytest.fixture(scope="module")
def home_settings(settings):
    with published_home(
        settings, "quota-home", D, [("CMP-A", "SMS")], lookups_per_minute=LOOKUPS, exports_per_day=EXPORTS
    ) as home:
        yield home


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_burst_past_the_lookup_quota_gets_429_with_retry_after(home_settings):
    fresh_minute()
    agent = bearer(sign_dev_token(home_settings, "burst.agent", "sales"))
    other = bearer(sign_dev_token(home_settings, "calm.agent", "sales"))
    with TestClient(create_app(ensure_redis(home_settings), home_settings)) as client:
        answers = [client.get(f"/v1/customers/{c}/offers", headers=agent) for c in range(1, LOOKUPS + 3)]
        assert [a.status_code for a in answers] == [200] * LOOKUPS + [429, 429]
        refused = answers[-1]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert f"quota of {LOOKUPS} look-ups a minute" in refused.json()["detail"]
        # the quota is the caller's: another agent still reads, and so does the customer themself
        assert client.get("/v1/customers/1/offers", headers=other).status_code == 200
        me = bearer(sign_dev_token(home_settings, "3", "customer"))
        assert client.get("/v1/me/offers", headers=me).status_code == 200
    on_record = [r for r in read_records(home_settings.audit_dir) if r["who"] == "burst.agent"]
    assert [r["status"] for r in on_record][-2:] == [429, 429]


def test_api_workers_share_the_counts_through_redis(home_settings):
    fresh_minute()
    key = {"X-API-Key": issue_keys(home_settings.api_keys_path, ("sales",))["sales"]}
    url = ensure_redis(home_settings)
    with TestClient(create_app(url, home_settings)) as one, TestClient(create_app(url, home_settings)) as two:
        counts = one.app.state.lookups  # worker one's look-up counts
        r = redis.Redis.from_url(url, decode_responses=True)
        assert all(one.get(f"/v1/customers/{c}/offers", headers=key).status_code == 200 for c in range(1, 4))
        # every SYNC_S each worker adds its counts to Redis and learns the others'; a worker that has not
        # seen the caller this minute reads the caller's count from Redis first
        wait_until(
            lambda: int(r.get(counts._name(counts.window, CALLER)) or 0),
            until=lambda total: total == 3,
            message="worker one's 3 look-ups to be counted in Redis",
        )
        second = [two.get(f"/v1/customers/{c}/offers", headers=key).status_code for c in range(1, 5)]
        assert second == [200, 200, 429, 429]
        # asked through the API instead, a 200 would count one more look-up: read what worker one knows
        wait_until(
            lambda: counts.known.get(CALLER),
            until=lambda total: total == LOOKUPS,
            message=f"worker one to learn from Redis the {LOOKUPS} look-ups both workers made",
        )
        assert one.get("/v1/customers/1/offers", headers=key).status_code == 429


def test_exports_past_the_days_quota_get_429_in_every_worker(home_settings):
    marketing = bearer(sign_dev_token(home_settings, "export.analyst", "marketing"))
    csv = {**marketing, "Accept": "text/csv"}
    url = ensure_redis(home_settings)
    with TestClient(create_app(url, home_settings)) as one, TestClient(create_app(url, home_settings)) as two:
        assert one.get("/v1/campaigns/CMP-A/customers", headers=csv).status_code == 200
        assert two.get("/v1/campaigns/CMP-A/customers", headers=csv).status_code == 200
        refused = one.get("/v1/campaigns/CMP-A/customers", headers=csv)
        assert refused.status_code == 429 and f"quota of {EXPORTS} exports a day" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
        assert two.get("/v1/campaigns/CMP-A/customers", headers=csv).status_code == 429
        # pages of the segment are not exports
        assert one.get("/v1/campaigns/CMP-A/customers", headers=marketing).status_code == 200


def test_lookups_made_while_a_sync_is_under_way_are_counted_and_a_failed_sync_keeps_its_counts(home_settings):
    """A worker's sync to Redis takes long (Redis holds writes for 0.3 s): the look-ups it admits
    meanwhile count with those being sent, so the quota holds; a sync that fails (Redis gone) keeps
    its counts for the next one, which adds them to Redis."""
    import asyncio

    import redis.asyncio as aioredis

    from serving.auth import Principal
    from serving.quotas import LookupQuota

    fresh_minute()
    url = ensure_redis(home_settings)
    who = Principal("staff", "slow.sync.agent", "sales", "jti-1")

    async def scenario() -> tuple[list, int, int]:
        quota = LookupQuota(home_settings.serving.redis_prefix, LOOKUPS)
        client = aioredis.Redis.from_url(url)
        gone = aioredis.Redis.from_url("redis://127.0.0.1:9/0")  # nothing listens there
        try:
            assert await quota.take(client, who) is None  # 1 (the caller read from Redis: 0)
            assert [quota.take_known(who) for _ in range(2)] == [None, None]  # 3
            await client.execute_command("CLIENT", "PAUSE", "300", "WRITE")  # answered once writes are held
            syncing = asyncio.create_task(quota.sync(client))  # sends 3, waits on the held writes
            await wait_until_async(
                lambda: dict(quota.sending),
                interval=0,  # looks after each turn of the event loop
                message="the sync to be under way (sending its counts to Redis)",
            )
            during = [quota.take_known(who) for _ in range(3)]  # 4, 5, then over the quota
            await syncing
            assert quota.take_known(who) is not None  # Redis says 3, 2 more unsent: still full
            with pytest.raises(redis.ConnectionError):
                await quota.sync(gone)
            after_failure = quota.unsent.get("staff:slow.sync.agent")
            await quota.sync(client)
            in_redis = int(await client.get(quota._name(quota.window, "staff:slow.sync.agent")))
        finally:
            await client.aclose()
            await gone.aclose()
        return during, after_failure, in_redis

    during, after_failure, in_redis = asyncio.run(scenario())
    assert during[:2] == [None, None] and during[2] is not None, during
    assert after_failure == 2  # the failed sync's two look-ups wait for the next
    assert in_redis == LOOKUPS
