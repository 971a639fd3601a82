"""Campaigns and segments (marketing, and sales for the lists): the live campaigns, a campaign's
segment a page at a time or whole as CSV (counted against the caller's segment rows of the day),
and the live snapshot's description."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from models.core_banking import Channel
from models.read_api import CampaignsAnswer, SegmentPage, SnapshotAnswer
from serving import segments
from serving.access import SEGMENT_ROWS, Access, AudienceRouter, caller
from serving.answers import answer, errors, freshness
from serving.auth import MARKETING, MARKETING_SALES

router = AudienceRouter(Access(roles=MARKETING_SALES))


@router.get(
    "/v1/campaigns",
    tags=["campaigns"],
    response_model=CampaignsAnswer,
    responses=errors(503),
    summary="Live campaigns and their assigned customers per channel",
)
async def campaigns(request: Request) -> JSONResponse:
    reader = request.app.state.reader
    sid, listed = await reader.json(reader.keys.campaigns)
    return answer(sid, {"campaigns": listed})


@router.get(
    "/v1/campaigns/{campaign_id}/customers",
    access=Access(roles=MARKETING, quota=SEGMENT_ROWS),
    tags=["campaigns"],
    response_model=SegmentPage,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "A page of the segment as JSON; with `Accept: text/csv`, the whole segment as CSV "
            "(position, customer_id, offer_id, channel, priority).",
        },
        **errors(404, 429, 503),
    },
    summary="A campaign's segment in priority order",
)
async def campaign_customers(
    request: Request,
    campaign_id: segments.CampaignId,
    channel: Annotated[Channel | None, Query(description="one channel's segment; all channels when left out")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="customers per page")] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$", description="next_cursor of the previous page")] = None,
) -> Response:
    state, who = request.app.state, caller(request)
    if "text/csv" in request.headers.get("accept", ""):
        return await segments.export_csv(state.reader, state.settings, who, campaign_id, channel)
    sid, page = await segments.read_page(
        state.reader, state.settings, who, campaign_id, channel, int(cursor or 0), limit
    )
    return answer(sid, page)


@router.get(
    "/v1/snapshot",
    tags=["snapshot"],
    response_model=SnapshotAnswer,
    responses=errors(503),
    summary="The live snapshot: business date, model, counts, created and expiry times, freshness",
)
async def snapshot(request: Request) -> JSONResponse:
    reader = request.app.state.reader
    sid, meta = await reader.json(reader.keys.meta)
    for internal in ("dictionary", "performance", "profile_segments"):  # the snapshot's own, for the console
        meta.pop(internal, None)
    meta.update(freshness(meta))
    return answer(sid, {"snapshot": meta})
