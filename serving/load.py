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

import numpy as np
import pandas as pd

from crm.services import ensure_redis
from crm.settings import Settings, get_settings
from crm.warehouse import connect
from serving.codec import NO_REASON, SEGMENT, Dictionary, codes, customer_fields, encode_offers
from serving.keys import Keys

log = logging.getLogger(__name__)


HSET_EXPIRING = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return redis.call('EXPIREAT', KEYS[1], ARGV[1])
"""


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
    dictionary, buffer, cols = _dictionary_and_offers(df)
    customer_ids = df["customer_id"].to_numpy(dtype=np.int64)
    if customer_ids.max() >= 2**32:
        raise PublishError("customer ids above 2**32 do not fit the snapshot encoding")

    pipe = client.pipeline(transaction=False)
    # the customers' ranked offers, in hash buckets; each bucket is written with its expiry in one
    # atomic step (a single-key script: fine on Redis Cluster), so a load killed half-way leaves
    # nothing behind that does not expire
    hset_expiring = client.register_script(HSET_EXPIRING)
    buckets = []
    for bucket, fields in customer_fields(customer_ids, buffer):
        key = keys.customer_bucket(sid, bucket)
        hset_expiring(keys=[key], args=[gone_at, *(x for kv in fields.items() for x in kv)], client=pipe)
        buckets.append(key)
        if len(buckets) % 200 == 0:
            pipe.execute()
    pipe.execute()
    # the segments, in priority order: one packed string per campaign x channel and per campaign
    campaign_summary: dict[str, dict] = {}
    n_segments = 0
    order = np.lexsort((customer_ids, -df["priority"].to_numpy(), cols["channel"], cols["campaign"]))
    for ca, campaign_id in enumerate(dictionary.campaigns):
        rows = order[cols["campaign"][order] == ca]
        if len(rows) == 0:
            continue
        summary = {"campaign_id": campaign_id, "assigned": len(rows), "channels": {}, "offers": []}
        segment_all = _segment(rows, df, cols)
        _write_string(pipe, keys.segment(sid, campaign_id, "ALL"), segment_all.tobytes(), gone_at)
        for ch, channel in enumerate(dictionary.channels):
            in_channel = rows[cols["channel"][rows] == ch]
            if len(in_channel):
                _write_string(
                    pipe,
                    keys.segment(sid, campaign_id, channel),
                    _segment(in_channel, df, cols).tobytes(),
                    gone_at,
                )
                summary["channels"][channel] = len(in_channel)
                n_segments += 1
        summary["offers"] = sorted({dictionary.offers[o] for o in np.unique(cols["offer"][rows]).tolist()})
        campaign_summary[campaign_id] = summary
        pipe.execute()
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
        "dictionary": dictionary.to_json(),
    }
    # the counts must check out before the switch
    found = 0
    for start in range(0, len(buckets), 1000):
        pipe = client.pipeline(transaction=False)
        for key in buckets[start : start + 1000]:
            pipe.hlen(key)
        found += sum(pipe.execute())
    if found != meta["customers"]:
        _drop(client, keys, sid)
        raise PublishError(f"snapshot {sid}: {found} customers in Redis, expected {meta['customers']}; not switched")
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
        **{k: meta[k] for k in meta if k not in ("snapshot_id", "dictionary")},
        snapshot_id=sid,
        previous_snapshot_id=previous,
    )
    log.info("published snapshot %s", json.dumps(asdict(result)))
    return result


def _dictionary_and_offers(df: pd.DataFrame) -> tuple[Dictionary, bytes, dict[str, np.ndarray]]:
    """The snapshot's dictionary, its customers' offers encoded, and the code columns."""
    campaigns = sorted(df["campaign_id"].unique().tolist())
    valid = df.groupby("campaign_id")["valid_until"].max().astype(str).to_dict()
    offers = sorted(df["offer_id"].unique().tolist())
    channels = sorted(df["channel"].unique().tolist())
    distinct = df["reasons"].unique().tolist()
    parsed = {text: json.loads(text) for text in distinct}
    too_many = [text for text, reasons in parsed.items() if len(reasons) > 3]
    if too_many:
        raise PublishError(f"an assignment carries more than 3 reasons: {too_many[0]}")
    vocabulary = sorted({r for reasons in parsed.values() for r in reasons})
    dictionary = Dictionary(campaigns, offers, channels, vocabulary, [valid[c] for c in campaigns])
    reason_index = {r: i for i, r in enumerate(vocabulary)}
    combo = {
        text: [reason_index[r] for r in reasons] + [NO_REASON] * (3 - len(reasons)) for text, reasons in parsed.items()
    }
    cols = {
        "campaign": codes(df["campaign_id"].to_numpy(), campaigns, "campaigns"),
        "offer": codes(df["offer_id"].to_numpy(), offers, "offers"),
        "channel": codes(df["channel"].to_numpy(), channels, "channels"),
    }
    if len(vocabulary) > 254:
        raise PublishError(f"a snapshot holds at most 254 distinct reasons, got {len(vocabulary)}")
    reasons = np.array([combo[t] for t in df["reasons"].tolist()], dtype=np.uint8).reshape(-1, 3)
    buffer = encode_offers(
        cols["campaign"],
        cols["offer"],
        cols["channel"],
        reasons,
        df["propensity"].to_numpy(dtype=np.float64),
        df["priority"].to_numpy(dtype=np.float64),
    )
    return dictionary, buffer, cols


def _segment(rows: np.ndarray, df: pd.DataFrame, cols: dict[str, np.ndarray]) -> np.ndarray:
    seg = np.empty(len(rows), dtype=SEGMENT)
    seg["customer_id"] = df["customer_id"].to_numpy()[rows]
    seg["priority"] = df["priority"].to_numpy()[rows]
    seg["channel"] = cols["channel"][rows]
    seg["offer"] = cols["offer"][rows]
    return seg


def _write_string(pipe, key: str, data: bytes, gone_at: int, chunk: int = 4 << 20) -> None:
    """Write a (possibly large) string in pieces, so no single command carries megabytes."""
    pipe.set(key, data[:chunk], exat=gone_at)
    for start in range(chunk, len(data), chunk):
        pipe.append(key, data[start : start + chunk])


def _drop(client, keys: Keys, snapshot_id: str) -> None:
    batch = []
    for key in client.scan_iter(match=keys.snapshot_pattern(snapshot_id), count=10_000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)
