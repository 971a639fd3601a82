"""Publish a business date's assignments to Redis as a new snapshot, made current atomically.

The snapshot's keys are written (pipelined) under a fresh snapshot id, counted, and only then is
``<prefix>:current`` switched to it in one write; the previous snapshot is removed afterwards.
A load that fails half-way leaves the previous snapshot serving and its own keys expire.
A snapshot is fresh for ``CRM_SNAPSHOT_TTL_HOURS`` (default 24) after the load; it keeps serving,
flagged stale, for ``CRM_SNAPSHOT_GRACE_HOURS`` (default 6) more so that a late daily run does not
empty the cache, and then every key of it expires (see docs/decisions/0003-snapshot-expiry.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass

import pandas as pd

from crm.services import ensure_redis
from crm.settings import Settings, get_settings
from crm.warehouse import connect
from serving.keys import Keys

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


class PublishRefused(PublishError):
    """The publish guard refused a snapshot whose served audience shrank too much."""


@dataclass(frozen=True)
class PublishResult:
    snapshot_id: str
    business_date: str
    customers: int
    offers: int
    segments: int
    model_name: str
    model_version: str
    created_at: str
    expires_at: str
    served_until: str
    previous_snapshot_id: str | None


def read_assignments(business_date: dt.date, settings: Settings) -> pd.DataFrame:

    with connect(settings) as con:
        return con.execute(
            """
            select customer_id, rank, campaign_id, offer_id, channel, propensity, priority,
                   valid_until, model_name, model_version, reasons
            from marts.customer_campaign_assignments
            where business_date = ?
            order by customer_id, rank
            """,
            [business_date],
        ).df()


def publish_snapshot(
    business_date: dt.date,
    settings: Settings | None = None,
    *,
    now: dt.datetime | None = None,
    force: bool = False,
) -> PublishResult:
    """Publish ``business_date``'s assignments; ``force`` overrides the publish guard."""
    import redis

    settings = settings or get_settings()
    df = read_assignments(business_date, settings)
    if df.empty:
        raise PublishError(
            f"no assignments for {business_date} in marts.customer_campaign_assignments: nothing to publish"
        )
    keys = Keys(settings.redis_prefix)
    client = redis.Redis.from_url(ensure_redis(settings))
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    expires = created + dt.timedelta(hours=settings.snapshot_ttl_hours)
    gone_at = int((expires + dt.timedelta(hours=settings.snapshot_grace_hours)).timestamp())
    sid = f"{business_date:%Y%m%d}-{created:%H%M%S}"
    previous = client.get(keys.current)
    previous = previous.decode() if previous else None
    if previous == sid:
        sid += "b"
    df["valid_until"] = df["valid_until"].astype(str)

    pipe = client.pipeline(transaction=False)
    # one key per customer: the ranked offers, compact JSON
    for written, (customer_id, group) in enumerate(df.groupby("customer_id", sort=True), start=1):
        offers = [
            {
                "rank": int(r.rank),
                "campaign_id": r.campaign_id,
                "offer_id": r.offer_id,
                "channel": r.channel,
                "valid_until": r.valid_until,
                "propensity": round(float(r.propensity), 4),
                "priority": round(float(r.priority), 2),
                "reasons": json.loads(r.reasons),
            }
            for r in group.itertuples(index=False)
        ]
        pipe.set(
            keys.customer(sid, int(customer_id)),
            json.dumps(offers, separators=(",", ":")),
            exat=gone_at,
        )
        if written % 5000 == 0:
            pipe.execute()
    # one list per campaign x channel: the segment in priority order
    segments = df.sort_values(
        ["campaign_id", "channel", "priority", "customer_id"],
        ascending=[True, True, False, True],
    )
    campaign_summary: dict[str, dict] = {}
    n_segments = 0
    for (campaign_id, channel), group in segments.groupby(["campaign_id", "channel"], sort=True):
        entries = [
            f"{int(c)}|{o}|{p:.2f}|{channel}"
            for c, o, p in zip(group.customer_id, group.offer_id, group.priority, strict=True)
        ]
        key = keys.segment(sid, campaign_id, channel)
        for start in range(0, len(entries), 10_000):
            pipe.rpush(key, *entries[start : start + 10_000])
        pipe.expireat(key, gone_at)
        n_segments += 1
        summary = campaign_summary.setdefault(
            campaign_id,
            {"campaign_id": campaign_id, "assigned": 0, "channels": {}, "offers": []},
        )
        summary["assigned"] += len(group)
        summary["channels"][channel] = len(group)
        summary["offers"] = sorted(set(summary["offers"]) | set(group.offer_id))
    # and one list per campaign over every channel, for marketing pulls without a channel
    for campaign_id, group in df.sort_values(
        ["campaign_id", "priority", "customer_id"], ascending=[True, False, True]
    ).groupby("campaign_id", sort=True):
        entries = [
            f"{int(c)}|{o}|{p:.2f}|{ch}"
            for c, o, p, ch in zip(
                group.customer_id,
                group.offer_id,
                group.priority,
                group.channel,
                strict=True,
            )
        ]
        key = keys.segment(sid, campaign_id, "ALL")
        for start in range(0, len(entries), 10_000):
            pipe.rpush(key, *entries[start : start + 10_000])
        pipe.expireat(key, gone_at)
    pipe.set(keys.campaigns(sid), json.dumps(list(campaign_summary.values())), exat=gone_at)
    pipe.execute()

    meta = {
        "snapshot_id": sid,
        "business_date": business_date.isoformat(),
        "model_name": str(df["model_name"].iat[0]),
        "model_version": str(df["model_version"].iat[0]),
        "customers": int(df["customer_id"].nunique()),
        "offers": len(df),
        "segments": n_segments,
        "created_at": created.isoformat(),
        "expires_at": expires.isoformat(),
        "served_until": dt.datetime.fromtimestamp(gone_at, dt.UTC).isoformat(),
    }
    # the counts must check out before the switch
    found = sum(1 for _ in client.scan_iter(match=keys.customer(sid, 0)[:-1] + "*", count=10_000))
    if found != meta["customers"]:
        raise PublishError(
            f"snapshot {sid}: {found} customer keys in Redis, expected {meta['customers']}; not switched"
        )
    live_meta = client.get(keys.meta(previous)) if previous else None
    if live_meta and not force:
        live = json.loads(live_meta)
        floor = live["customers"] * (1 - settings.max_audience_shrink)
        if meta["customers"] < floor:
            _drop(client, keys, sid)
            raise PublishRefused(
                f"publish guard: snapshot for {business_date} serves {meta['customers']} customers, "
                f"{1 - meta['customers'] / live['customers']:.0%} fewer than the live snapshot {previous} "
                f"({live['customers']} customers for {live['business_date']}); the bound is "
                f"CRM_MAX_AUDIENCE_SHRINK={settings.max_audience_shrink:.0%}. The live snapshot keeps serving; "
                "rerun with the DAG param force_publish=true (make demo FORCE_PUBLISH=1) to publish anyway"
            )
    client.set(keys.meta(sid), json.dumps(meta), exat=gone_at)
    client.set(keys.current, sid, exat=gone_at)  # the atomic switch
    if previous:
        _drop(client, keys, previous)
    result = PublishResult(
        **{k: meta[k] for k in meta if k != "snapshot_id"},
        snapshot_id=sid,
        previous_snapshot_id=previous,
    )
    log.info("published snapshot %s", json.dumps(asdict(result)))
    return result


def _drop(client, keys: Keys, snapshot_id: str) -> None:
    batch = []
    for key in client.scan_iter(match=keys.snapshot_pattern(snapshot_id), count=10_000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)
