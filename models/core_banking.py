"""Contracts of the records the integration API returns, one pydantic model per entity.

The sandbox produces records that honour them; the extraction checks every record against them
and quarantines what breaks them. Field names are the API's (snake_case JSON).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Segment = Literal["MASIVO", "EMPRENDEDOR", "PREFERENTE", "PREMIUM"]
IncomeBand = Literal["B1", "B2", "B3", "B4", "B5"]  # < 1.5k, 1.5-3k, 3-6k, 6-12k, >= 12k PEN/month
Product = Literal[
    "SAVINGS",
    "CHECKING",
    "CTS",
    "TERM_DEPOSIT",
    "CREDIT_CARD",
    "PERSONAL_LOAN",
    "MORTGAGE",
    "INSURANCE",
]
Currency = Literal["PEN", "USD"]
TransactionType = Literal[
    "SALARY_DEPOSIT",
    "POS_PURCHASE",
    "ATM_WITHDRAWAL",
    "TRANSFER",
    "WALLET_P2P",
    "BILL_PAYMENT",
]
MERCHANT_CATEGORIES = ("GROCERY", "RESTAURANTS", "FUEL", "TRAVEL", "ELECTRONICS", "CLOTHING", "HEALTH", "ENTERTAINMENT")
Channel = Literal["SMS", "EMAIL", "PHONE", "PUSH", "SOCIAL"]
Response = Literal["ACCEPTED", "DECLINED", "NO_ANSWER"]

PRODUCTS: tuple[str, ...] = Product.__args__
CHANNELS: tuple[str, ...] = Channel.__args__
INCOME_BANDS: tuple[str, ...] = IncomeBand.__args__
SEGMENTS: tuple[str, ...] = Segment.__args__

PositiveId = Annotated[int, Field(gt=0, lt=2**63)]  # lands as a 64-bit integer (parquet, the warehouse)
DOCUMENT_DIGITS: dict[str, int] = {"DNI": 8, "RUC": 11}  # a document number's digits, by document type


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)


class Customer(_Record):
    customer_id: PositiveId
    document_type: Literal["DNI", "RUC"]
    document_number: str
    full_name: str = Field(min_length=1)
    birth_date: dt.date
    region: str = Field(min_length=1)
    district: str = Field(min_length=1)
    segment: Segment
    income_band: IncomeBand
    consent_sms: bool
    consent_email: bool
    consent_phone: bool
    consent_push: bool
    consent_social: bool
    created_on: dt.date
    updated_on: dt.date

    @field_validator("document_number")
    @classmethod
    def _document(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("document_type")
        expected = DOCUMENT_DIGITS.get(kind, DOCUMENT_DIGITS["RUC"])
        if not (value.isdigit() and len(value) == expected):
            raise ValueError(f"must be {expected} digits for {kind}")
        return value


class Account(_Record):
    account_id: PositiveId
    customer_id: PositiveId
    product: Product
    currency: Currency
    balance: Decimal = Field(max_digits=16, decimal_places=2)
    opened_on: dt.date
    status: Literal["ACTIVE", "CLOSED"]
    updated_on: dt.date


class Transaction(_Record):
    transaction_id: str = Field(min_length=1)
    account_id: PositiveId
    customer_id: PositiveId
    booking_date: dt.date
    type: TransactionType
    merchant_category: str | None = None
    amount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: Currency


class CampaignResponse(_Record):
    """A member of a campaign's list on ``contact_date`` and what came of it. A member the bank did
    not contact (``contacted`` false: the control of an experiment, tracked and left alone) is
    ``ACCEPTED`` when they took the offer's product anyway, else ``NO_ANSWER``. A feed without the
    field (a bank that hands out no lists) is read as contacted. ``list_date`` says which of the
    platform's lists the member was on (the bank's own campaigns: none)."""

    response_id: str = Field(min_length=1)
    customer_id: PositiveId
    campaign_id: str = Field(min_length=1)
    channel: Channel
    contact_date: dt.date
    response: Response
    contacted: bool | None = None
    list_date: dt.date | None = None  # the business date of the platform's list it was on; none: the bank's own


class ExecutionMember(BaseModel):
    """One member of the list the platform hands the bank's campaign execution for a business date
    (``PUT /v1/campaign-executions/{business_date}``): contacted the next day on ``channel`` when
    ``contact``, else tracked as the experiment's control and not contacted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: PositiveId
    campaign_id: str = Field(min_length=1, max_length=64)
    channel: Channel
    contact: bool


ENTITIES: dict[str, type[_Record]] = {
    "customers": Customer,
    "accounts": Account,
    "transactions": Transaction,
    "campaign_responses": CampaignResponse,
}

PRIMARY_KEYS: dict[str, str] = {
    "customers": "customer_id",
    "accounts": "account_id",
    "transactions": "transaction_id",
    "campaign_responses": "response_id",
}
