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
from serving.quotas import take_export
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


async def read_page(reader: SnapshotReader, campaign_id: str, channel: str | None, start: int, limit: int):
    """(snapshot id, page) of the live snapshot: ``total``, ``customers`` (positions from
    ``start + 1``) and ``next_cursor``; 404 when the campaign has no assignments in it."""
    size = SEGMENT.itemsize

    async def page_and_length(key: str):
        async with reader.raw.pipeline(transaction=False) as pipe:
            pipe.getrange(key, start * size, (start + limit) * size - 1)
            pipe.strlen(key)
            return await pipe.execute()

    sid, (d, _, (blob, length)) = await _in_segment(reader, campaign_id, channel or "ALL", page_and_length)
    total = length // size
    customers = decode_segment(blob, d, start + 1)
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
    day (429 with Retry-After past the quota)."""
    async with asyncio.timeout(settings.redis_deadline_s):  # a stalled Redis: 503, as every read
        wait = await take_export(reader.text, settings.redis_prefix, settings.quota_exports_per_day, who)
    if wait is not None:
        status, body, headers = too_many(f"quota of {settings.quota_exports_per_day} exports a day used up", wait)
        return Response(body, status_code=status, headers=headers, media_type="application/json")
    channel_name = channel or "ALL"
    sid, (d, key, length) = await _in_segment(reader, campaign_id, channel_name, reader.raw.strlen)
    return StreamingResponse(
        reader.segment_csv(key, d, length // SEGMENT.itemsize),
        media_type="text/csv",
        headers={
            "X-Snapshot-Id": sid,
            "Content-Disposition": f'attachment; filename="{campaign_id}-{channel_name}-{sid}.csv"',
        },
    )
