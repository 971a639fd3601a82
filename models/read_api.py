"""Contracts of what the cache holds and the read API returns."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from models.core_banking import Channel


class MobileOffer(BaseModel):
    """One assigned offer as the mobile app sees it: what, through which channel, until when."""

    model_config = ConfigDict(frozen=True)

    rank: int = Field(ge=1, description="1 is the offer to present first")
    campaign_id: str
    offer_id: str
    channel: Channel
    valid_until: dt.date


class Offer(MobileOffer):
    """One assigned offer as stored in the cache, with why it was chosen (sales and marketing)."""

    propensity: float = Field(ge=0, le=1, description="the model's probability that the customer accepts")
    priority: float = Field(description="propensity x offer value x campaign weight: the arbitration order")
    reasons: list[str] = Field(description="why this offer and channel, in words a sales agent can use")


MOBILE_FIELDS = tuple(MobileOffer.model_fields)


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


# --- what the read API answers (documents its OpenAPI; the API encodes the same shapes itself) ---


class Error(BaseModel):
    detail: str


class SnapshotInfo(SnapshotMeta):
    served_until: dt.datetime = Field(description="when the snapshot's keys expire: expiry plus the stale grace")
    age_seconds: int
    fresh: bool = Field(description="false once past expires_at: the daily run is late, the data is stale")


class SnapshotAnswer(BaseModel):
    snapshot_id: str
    snapshot: SnapshotInfo


class CampaignSummary(BaseModel):
    campaign_id: str
    assigned: int = Field(description="customers assigned the campaign in the live snapshot")
    channels: dict[str, int] = Field(description="assigned customers per channel")
    offers: list[str]


class CampaignsAnswer(BaseModel):
    snapshot_id: str
    campaigns: list[CampaignSummary]


class SegmentEntry(BaseModel):
    position: int = Field(ge=1)
    customer_id: int
    offer_id: str
    channel: Channel
    priority: float


class SegmentPage(BaseModel):
    snapshot_id: str
    campaign_id: str
    channel: Channel | None
    total: int = Field(description="customers in the whole segment")
    customers: list[SegmentEntry]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class OffersAnswer(BaseModel):
    snapshot_id: str
    customer_id: int
    offers: list[Offer] | list[MobileOffer] = Field(
        description="best first; a customer (/v1/me/offers) gets MobileOffer"
    )


class Readiness(BaseModel):
    ready: bool
    snapshot_id: str | None = None
    fresh: bool | None = None
    reason: str | None = None


class Balance(BaseModel):
    """One of the customer's accounts as the mobile app shows it (the number masked)."""

    account: str = Field(description="the account number's last four digits, masked: ****0071")
    product: str
    currency: str
    balance: str = Field(description="decimal, as the bank states it")


class BalancesAnswer(BaseModel):
    customer_id: int
    as_of: dt.date = Field(description="the day the bank stated the balances for (today in Lima)")
    accounts: list[Balance]


class Movement(BaseModel):
    """One transaction as the mobile app lists it."""

    transaction_id: str
    booking_date: dt.date
    type: str
    merchant_category: str | None
    amount: str = Field(description="decimal; negative for money out")
    currency: str
    account: str = Field(description="the account's last four digits, masked")


class TransactionsAnswer(BaseModel):
    customer_id: int
    date_from: dt.date = Field(alias="from")
    date_to: dt.date = Field(alias="to")
    transactions: list[Movement] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")
