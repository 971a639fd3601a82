"""Contracts of what the cache holds and the read API returns."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from models.core_banking import Channel


class Offer(BaseModel):
    """One assigned offer as stored in the cache (the mobile role sees a subset)."""

    model_config = ConfigDict(frozen=True)

    rank: int
    campaign_id: str
    offer_id: str
    channel: Channel
    valid_until: dt.date
    propensity: float
    priority: float
    reasons: list[str]


MOBILE_FIELDS = ("rank", "campaign_id", "offer_id", "channel", "valid_until")


class SnapshotMeta(BaseModel):
    snapshot_id: str
    business_date: dt.date
    model_name: str
    model_version: str
    customers: int
    offers: int
    segments: int
    created_at: dt.datetime
    expires_at: dt.datetime
