"""Readers never see a mix of two snapshots, an export finishes from the snapshot it started on, and
a load killed half-way leaves the live one serving.

A real read API (uvicorn, ``entrypoints.cli serve``) over the real Redis server, hammered by readers while
snapshots are published and switched.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import threading

import httpx
import pandas as pd
import pytest
import redis
from assignments import assignments
from conftest import running_read_api
from waits import wait_until

from crm.services import ensure_redis
from crm.settings import REPO_ROOT
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.auth import issue_keys
from serving.codec import BUCKET
from serving.keys import Keys
from serving.publish import publish_snapshot

DA, DB = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
CUSTOMERS = 300
FIRST = {DA: "CMP-A", DB: "CMP-B"}  # each date ranks a different campaign first


def _assignments(first: str, second: str, n: int) -> pd.DataFrame:
    return assignments(n, [(first, "SMS"), (second, "SMS")])


@pytest.fixture(scope="module")
def marketing_key(settings) -> str:
    """A marketing key, issued before the API starts (it reads its key store at start-up)."""
    return issue_keys(settings.api_keys_path, roles=("marketing",))["marketing"]


@pytest.fixture(scope="module")
def server(settings, marketing_key):
    write_assignments(DA, _assignments("CMP-A", "CMP-B", CUSTOMERS), ModelRef("m", "1"), settings)
    write_assignments(DB, _assignments("CMP-B", "CMP-A", CUSTOMERS), ModelRef("m", "2"), settings)
    publish_snapshot(DA, settings, force=True)
    key = issue_keys(settings.api_keys_path, roles=("sales",))["sales"]
    # the readers stand for a sales floor sharing one integration key, and the export is a whole
    # 400,000-customer segment: past any per-caller quota
    quotas = {"CRM_QUOTA_LOOKUPS_PER_MINUTE": str(10**9), "CRM_QUOTA_SEGMENT_ROWS_PER_DAY": str(10**9)}
    with running_read_api(settings.home, quotas) as url:
        yield url, key


def test_readers_never_see_a_mix_of_two_snapshots(server, settings):
    url, key = server
    seen: list[tuple[int, str | None, str | None, str | None]] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10) as client:
            while not stop.is_set():
                resp = client.get(f"/v1/customers/{rng.randint(1, CUSTOMERS)}/offers")
                body = resp.json() if resp.status_code == 200 else {}
                offers = body.get("offers") or [{}]
                seen.append(
                    (
                        resp.status_code,
                        body.get("snapshot_id"),
                        resp.headers.get("x-snapshot-id"),
                        offers[0].get("campaign_id"),
                    )
                )

    def readers_answer_from(sid: str, since: int) -> None:
        """Wait until the readers have been answered from snapshot ``sid`` (after their ``since``-th answer)."""
        wait_until(
            lambda: {answer_sid for _, answer_sid, *_ in seen[since:]},
            until=lambda sids: sid in sids,
            message=f"the readers to be answered from snapshot {sid}",
        )

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    dates = {}
    try:
        r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
        readers_answer_from(r.get(Keys(settings.serving.redis_prefix).current), 0)  # the readers are under way
        for date in (DB, DA, DB):  # back and forth on purpose, each switch seen by the readers before the next
            since = len(seen)
            switched = publish_snapshot(date, settings, force=True).snapshot_id
            dates[switched] = date
            readers_answer_from(switched, since)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(seen) > 100, "the readers barely ran"
    statuses = {s for s, *_ in seen}
    assert statuses == {200}, f"non-200 answers while switching: {statuses}"
    assert len({sid for _, sid, *_ in seen} & set(dates)) >= 2, "the readers did not see the switches"
    for _, sid, header_sid, first in seen:
        assert sid == header_sid
        if sid in dates:  # the body comes from the snapshot it names
            assert first == FIRST[dates[sid]]


def test_a_load_killed_half_way_leaves_the_live_snapshot_serving(server, settings):
    url, key = server
    r = redis.Redis.from_url(ensure_redis(settings), decode_responses=True)
    keys = Keys(settings.serving.redis_prefix)
    big = dt.date(2026, 10, 3)
    n = 300_000
    write_assignments(big, _assignments("CMP-C", "CMP-A", n), ModelRef("m", "3"), settings)
    live = r.get(keys.current)
    code = (
        "import datetime as dt; from crm.settings import get_settings; from serving.publish import publish_snapshot; "
        f"publish_snapshot(dt.date({big:%Y, %-m, %-d}), get_settings())"
    )
    env = {**os.environ, "CRM_HOME": str(settings.home)}
    loader = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)
    prefix = f"{settings.serving.redis_prefix}:snap:{big:%Y%m%d}-"
    wait_until(
        lambda: next(r.scan_iter(match=prefix + "*", count=1000), None),
        timeout=120,
        interval=0.005,  # looks often: the loader is to be killed half-way
        message=f"the loader to write a key under {prefix}",
    )
    loader.kill()  # as soon as it has started writing
    loader.wait()
    assert r.get(keys.current) == live
    written = list(r.scan_iter(match=prefix + "*", count=10_000))
    assert 0 < len(written) < n // BUCKET, "the loader was not killed half-way"
    assert all(0 < r.ttl(k) <= 30 * 3600 for k in written[:100])  # the half-written keys expire on their own
    resp = httpx.get(f"{url}/v1/customers/1/offers", headers={"X-API-Key": key})
    assert resp.status_code == 200 and resp.json()["snapshot_id"] == live


def test_a_csv_export_running_while_the_snapshot_switches_finishes_from_its_snapshot(server, settings, marketing_key):
    """Marketing pulls a whole segment while the next day's snapshot is published: the file is whole
    and from the snapshot it started on (the replaced snapshot drains instead of vanishing)."""
    url, _ = server
    first, second = dt.date(2026, 10, 10), dt.date(2026, 10, 11)
    n = 400_000  # about 16 MB of CSV: more than the sockets buffer (about 10 MB on loopback) while the client waits
    write_assignments(first, _assignments("CMP-A", "CMP-B", n), ModelRef("m", "5"), settings)
    write_assignments(second, _assignments("CMP-B", "CMP-A", n), ModelRef("m", "6"), settings)
    started_on = publish_snapshot(first, settings).snapshot_id
    headers = {"X-API-Key": marketing_key, "Accept": "text/csv"}
    with httpx.stream("GET", f"{url}/v1/campaigns/CMP-A/customers", headers=headers, timeout=60) as resp:
        chunks = resp.iter_bytes()
        body = next(chunks)
        switched = publish_snapshot(second, settings)  # the switch, with the export half-way
        body += b"".join(chunks)
    assert switched.published and switched.previous_snapshot_id == started_on
    assert resp.status_code == 200 and resp.headers["x-snapshot-id"] == started_on
    lines = body.decode().strip().splitlines()
    assert len(lines) == n + 1, f"{len(lines) - 1} of {n} rows"
    assert lines[-1].startswith(f"{n},")
