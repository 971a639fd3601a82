"""A campaign's segment from the live snapshot, a page at a time or whole as CSV: what the API's
``GET /v1/campaigns/{id}/customers`` and the console's campaign page and download both answer."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import HTTPException, Path
from fastapi.responses import Response, StreamingResponse

from crm.settings import Settings
from serving.answers import too_many
from serving.auth import Principal
from serving.codec import SEGMENT, decode_segment
from serving.quotas import seconds_to_tomorrow, take_daily
from serving.reader import SnapshotReader

CampaignId = Annotated[str, Path(pattern=r"^[A-Z0-9][A-Z0-9-]{1,63}$")]


async def _in_segment(reader: SnapshotReader, campaign_id: str, channel_name: str, then):
    """(snapshot id, (dictionary, segment key, ``await then(key)``)) of the live snapshot's segment
    of ``campaign_id`` on ``channel_name``; 404 when the campaign has no assignments in it."""

    async def read(sid: str):
        d = await reader.dictionary(sid)
        if d is None:
            return None
        if campaign_id not in d.campaigns:
            return "unknown"
        key = reader.keys.segment(sid, campaign_id, channel_name)
        return d, key, await then(key)

    sid, value = await reader.in_snapshot(read)
    if value is None or value == "unknown":
        raise HTTPException(404, detail=f"campaign {campaign_id} has no assignments in the live snapshot")
    return sid, value


async def read_page(
    reader: SnapshotReader,
    settings: Settings,
    who: Principal,
    campaign_id: str,
    channel: str | None,
    start: int,
    limit: int,
):
    """(snapshot id, page) of the live snapshot: ``total``, ``customers`` (positions from
    ``start + 1``) and ``next_cursor``; 404 when the campaign has no assignments in it. The page's
    customers are counted against the caller's segment rows of the day: ``QuotaUsedUp`` past it."""
    size = SEGMENT.itemsize

    async def page_and_length(key: str):
        async with reader.raw.pipeline(transaction=False) as pipe:
            pipe.getrange(key, start * size, (start + limit) * size - 1)
            pipe.strlen(key)
            return await pipe.execute()

    sid, (d, _, (blob, length)) = await _in_segment(reader, campaign_id, channel or "ALL", page_and_length)
    total = length // size
    customers = decode_segment(blob, d, start + 1)
    if customers:
        await _take(reader, settings, who, {ROWS: (len(customers), settings.quotas.segment_rows_per_day)})
    nxt = start + len(customers)
    page = {
        "campaign_id": campaign_id,
        "channel": channel,
        "total": total,
        "customers": customers,
        "next_cursor": str(nxt) if nxt < total else None,
    }
    return sid, page


async def export_csv(
    reader: SnapshotReader, settings: Settings, who: Principal, campaign_id: str, channel: str | None
) -> Response:
    """The whole segment as CSV, in priority order, counted against the caller's exports of the
    day and its rows against their segment rows of the day (``QuotaUsedUp`` past either)."""
    channel_name = channel or "ALL"
    sid, (d, key, length) = await _in_segment(reader, campaign_id, channel_name, reader.raw.strlen)
    rows = length // SEGMENT.itemsize
    await _take(reader, settings, who, {
        EXPORTS: (1, settings.quotas.exports_per_day),
        ROWS: (rows, settings.quotas.segment_rows_per_day),
    })  # fmt: skip
    return StreamingResponse(
        reader.segment_csv(key, d, rows),
        media_type="text/csv",
        headers={
            "X-Snapshot-Id": sid,
            "Content-Disposition": f'attachment; filename="{campaign_id}-{channel_name}-{sid}.csv"',
            "Cache-Control": "no-store",
        },
    )


EXPORTS, ROWS = "exports", "segment-rows"
USED_UP = {EXPORTS: "quota of {limit} exports a day used up", ROWS: "quota of {limit} segment rows a day used up "
           "(pages and CSV exports together)"}  # fmt: skip


class QuotaUsedUp(Exception):
    """A daily quota of segment reads is used up: 429 with the seconds to midnight UTC."""

    def __init__(self, detail: str):
        self.detail = detail

    def answer(self) -> Response:
        status, body, headers = too_many(self.detail, seconds_to_tomorrow())
        return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _take(reader: SnapshotReader, settings: Settings, who: Principal, counts: dict[str, tuple[int, int]]):
    async with asyncio.timeout(settings.serving.redis_deadline_s):  # a stalled Redis: 503, as every read
        over = await take_daily(reader.text, settings.serving.redis_prefix, who, counts)
    if over is not None:
        raise QuotaUsedUp(USED_UP[over].format(limit=counts[over][1]))
