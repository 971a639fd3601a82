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

from crm import cache
from crm.services import ensure_redis
from crm.settings import Settings
from serving.codec import (
    OFFER,
    PROFILE,
    SEGMENT,
    customer_buckets,
    encode_offers,
)
from serving.keys import Keys
from serving.snapshot_source import Assignments, PublishError, read_assignments, read_performance, read_profiles

log = logging.getLogger(__name__)


# One bucket in one step: ARGV = expiry, packed uint32 customer ids, uint8 record counts, records
# (OFFER records, customer after customer). Unpacking on the server keeps the client's work per
# bucket to three byte slices instead of a quarter of a thousand arguments.
_HSET_EXPIRING = """
local ids, counts, offers = ARGV[2], ARGV[3], ARGV[4]
local args, pos = {}, 1
for i = 1, #counts do
  local n = string.byte(counts, i) * OFFER_SIZE
  args[2 * i - 1] = tostring(struct.unpack('<I4', ids, 4 * i - 3))
  args[2 * i] = string.sub(offers, pos, pos + n - 1)
  pos = pos + n
end
redis.call('HSET', KEYS[1], unpack(args))
return redis.call('EXPIREAT', KEYS[1], ARGV[1])
"""
HSET_EXPIRING = _HSET_EXPIRING.replace("OFFER_SIZE", str(OFFER.size))
HSET_PROFILES = _HSET_EXPIRING.replace("OFFER_SIZE", str(PROFILE.size))  # one record a customer


class PublishRefused(PublishError):
    """The publish guard refused a snapshot whose served audience shrank too much."""


# The switch, in one step on the server: ``<prefix>:current`` moves to the new snapshot unless the
# live one is for a newer business date (a snapshot id starts with its date, YYYYMMDD) and the
# publish is not forced. Returns the live id it refused to replace, or nothing when it switched.
# One key: atomic on a Redis Cluster too, and two publishes racing cannot move the cache back.
SWITCH_FORWARD = """
local live = redis.call('GET', KEYS[1])
if live and ARGV[3] == '0' and string.sub(live, 1, 8) > string.sub(ARGV[1], 1, 8) then
  return live
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return false
"""


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
    published: bool = True
    reason: str = "published"


def publish_snapshot(
    business_date: dt.date,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    force: bool = False,
) -> PublishResult:
    """Publish ``business_date``'s assignments as the live snapshot. The served cache only moves
    forward: when the live snapshot is for a newer business date, nothing is written and the
    result says why (``published`` False); ``force`` publishes anyway, and overrides the publish
    guard."""

    a = read_assignments(business_date, settings)
    if a is None:
        raise PublishError(
            f"no assignments for {business_date} in marts.customer_campaign_assignments: nothing to publish"
        )
    keys = Keys(settings.serving.redis_prefix)
    client = cache.connect(ensure_redis(settings))
    newer = _newer_live_snapshot(client, keys, business_date)
    if newer is not None and not force:
        return _not_published(business_date, a, newer)
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    expires = created + dt.timedelta(hours=settings.serving.snapshot_ttl_hours)
    gone_at = int((expires + dt.timedelta(hours=settings.serving.snapshot_grace_hours)).timestamp())
    sid = f"{business_date:%Y%m%d}-{created:%H%M%S}"
    previous = client.get(keys.current)
    previous = previous.decode() if previous else None
    if previous == sid:
        sid += "b"
    dictionary = a.dictionary
    buffer = encode_offers(a.campaign, a.offer, a.channel, a.reasons, a.propensity, a.priority)

    pipe = client.pipeline(transaction=False)
    # the customers' ranked offers, in hash buckets; each bucket is written with its expiry in one
    # atomic step (a single-key script: fine on Redis Cluster), so a load killed half-way leaves
    # nothing behind that does not expire. EVAL, not EVALSHA: redis-py's cluster pipeline refuses
    # EVALSHA, and the script's text is small beside a bucket's data
    buckets = []
    for bucket, ids, counts, offers in customer_buckets(a.customer_id, buffer):
        key = keys.customer_bucket(sid, bucket)
        pipe.execute_command("EVAL", HSET_EXPIRING, 1, key, gone_at, ids, counts, offers)
        buckets.append(key)
        if len(buckets) % 200 == 0:
            pipe.execute()
    pipe.execute()
    # the segments, in priority order: one packed string per campaign x channel and per campaign
    campaign_summary: dict[str, dict] = {}
    n_segments = 0
    order = np.lexsort((a.customer_id, -a.priority, a.channel, a.campaign))
    for ca, campaign_id in enumerate(dictionary.campaigns):
        rows = order[a.campaign[order] == ca]
        if len(rows) == 0:
            continue
        summary = {"campaign_id": campaign_id, "assigned": len(rows), "channels": {}, "offers": []}
        segment_all = _segment(rows, a)
        _write_string(pipe, keys.segment(sid, campaign_id, "ALL"), segment_all.tobytes(), gone_at)
        for ch, channel in enumerate(dictionary.channels):
            in_channel = rows[a.channel[rows] == ch]
            if len(in_channel):
                _write_string(
                    pipe,
                    keys.segment(sid, campaign_id, channel),
                    _segment(in_channel, a).tobytes(),
                    gone_at,
                )
                summary["channels"][channel] = len(in_channel)
                n_segments += 1
        summary["offers"] = sorted({dictionary.offers[o] for o in np.unique(a.offer[rows]).tolist()})
        campaign_summary[campaign_id] = summary
        pipe.execute()
    pipe.set(keys.campaigns(sid), json.dumps(list(campaign_summary.values())), exat=gone_at)
    pipe.execute()
    # what the console shows beside the assignment, published with it so that it never reads the
    # warehouse live: each campaign's last 30 days, and every customer's masked profile
    performance = read_performance(business_date, settings)
    if performance is not None:
        pipe.set(keys.performance(sid), json.dumps(performance), exat=gone_at)
    profiles = read_profiles(business_date, settings)
    if profiles is not None:
        ids, records, _ = profiles
        for n, (bucket, bucket_ids, counts, recs) in enumerate(customer_buckets(ids, records, PROFILE.size)):
            pipe.execute_command(
                "EVAL", HSET_PROFILES, 1, keys.profile_bucket(sid, bucket), gone_at, bucket_ids, counts, recs
            )
            if n % 200 == 199:
                pipe.execute()
    pipe.execute()

    meta = {
        "snapshot_id": sid,
        "business_date": business_date.isoformat(),
        "model_name": a.model_name,
        "model_version": a.model_version,
        "customers": int(np.count_nonzero(np.diff(a.customer_id)) + 1),
        "offers": len(a),
        "segments": n_segments,
        "created_at": created.isoformat(),
        "expires_at": expires.isoformat(),
        "served_until": dt.datetime.fromtimestamp(gone_at, dt.UTC).isoformat(),
        "dictionary": dictionary.to_json(),
        # the console's extras: whether they were published, and the profiles' segment names
        "performance": performance is not None,
        "profile_segments": profiles[2] if profiles is not None else None,
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
        floor = live["customers"] * (1 - settings.serving.max_audience_shrink)
        if meta["customers"] < floor:
            _drop(client, keys, sid)
            raise PublishRefused(
                f"publish guard: snapshot for {business_date} serves {meta['customers']} customers, "
                f"{1 - meta['customers'] / live['customers']:.0%} fewer than the live snapshot {previous} "
                f"({live['customers']} customers for {live['business_date']}); the bound is "
                f"CRM_MAX_AUDIENCE_SHRINK={settings.serving.max_audience_shrink:.0%}. The live snapshot keeps serving; "
                "rerun with the DAG param force_publish=true (make demo FORCE_PUBLISH=1) to publish anyway"
            )
    client.set(keys.meta(sid), json.dumps(meta), exat=gone_at)
    refused = client.eval(SWITCH_FORWARD, 1, keys.current, sid, gone_at, int(force))  # the atomic switch
    if refused:  # a newer date was published while this one was being written
        _drop(client, keys, sid)
        live = json.loads(client.get(keys.meta(refused.decode())) or "{}")
        return _not_published(business_date, a, live or {"snapshot_id": refused.decode()})
    if previous:
        _drain(client, keys, previous, settings.serving.snapshot_drain_seconds)
    result = PublishResult(
        **{k: meta[k] for k in meta if k not in ("snapshot_id", "dictionary", "performance", "profile_segments")},
        snapshot_id=sid,
        previous_snapshot_id=previous,
    )
    log.info("published snapshot %s", json.dumps(asdict(result)))
    return result


def _segment(rows: np.ndarray, a: Assignments) -> np.ndarray:
    seg = np.empty(len(rows), dtype=SEGMENT)
    seg["customer_id"] = a.customer_id[rows]
    seg["priority"] = a.priority[rows]
    seg["channel"] = a.channel[rows]
    seg["offer"] = a.offer[rows]
    return seg


def _write_string(pipe, key: str, data: bytes, gone_at: int, chunk: int = 4 << 20) -> None:
    """Write a (possibly large) string in pieces, so no single command carries megabytes."""
    pipe.set(key, data[:chunk], exat=gone_at)
    for start in range(chunk, len(data), chunk):
        pipe.append(key, data[start : start + chunk])


def _newer_live_snapshot(client, keys: Keys, business_date: dt.date) -> dict | None:
    """The live snapshot's metadata when it is for a business date after ``business_date``."""
    live = client.get(keys.current)
    if live is None or live.decode()[:8] <= f"{business_date:%Y%m%d}":
        return None
    meta = client.get(keys.meta(live.decode()))
    return json.loads(meta) if meta else {"snapshot_id": live.decode(), "business_date": live.decode()[:8]}


def _not_published(business_date: dt.date, a: Assignments, live: dict) -> PublishResult:
    reason = (
        f"not published: the live snapshot {live['snapshot_id']} is for {live.get('business_date')}, newer than "
        f"{business_date}; the served cache only moves forward. {business_date}'s assignment is in "
        "marts.customer_campaign_assignments; the DAG param force_publish=true publishes it anyway"
    )
    log.warning("snapshot for %s %s", business_date, reason)
    return PublishResult(
        snapshot_id="", business_date=business_date.isoformat(), customers=len(np.unique(a.customer_id)),
        offers=len(a), segments=0, model_name=a.model_name, model_version=a.model_version, created_at="",
        expires_at="", served_until="", previous_snapshot_id=live["snapshot_id"], published=False, reason=reason,
    )  # fmt: skip


def _drain(client, keys: Keys, snapshot_id: str, seconds: int) -> None:
    """The replaced snapshot stays readable ``seconds`` more, then expires: a reader that started on it
    (a segment's CSV export) finishes from it; nothing new reads it, ``current`` has moved."""
    batch = []
    for key in client.scan_iter(match=keys.snapshot_pattern(snapshot_id), count=10_000):
        batch.append(key)
        if len(batch) >= 5000:
            _expire_within(client, batch, seconds)
            batch = []
    if batch:
        _expire_within(client, batch, seconds)


def _expire_within(client, keys: list, seconds: int) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.expire(key, seconds)
    pipe.execute()


def _drop(client, keys: Keys, snapshot_id: str) -> None:
    batch = []
    for key in client.scan_iter(match=keys.snapshot_pattern(snapshot_id), count=10_000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def live_snapshot_meta(settings: Settings) -> dict | None:
    """The live snapshot's metadata (id, business date, counts, expiry), or None when none is live."""
    keys = Keys(settings.serving.redis_prefix)
    with cache.connect(ensure_redis(settings), decode_responses=True) as client:
        sid = client.get(keys.current)
        meta = client.get(keys.meta(sid)) if sid else None
    return json.loads(meta) if meta else None
