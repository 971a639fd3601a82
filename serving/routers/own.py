"""The signed-in customer's own reads (the mobile app): their offers from the live snapshot, their
balances and transactions from the bank's API. Customer tokens only; every call is a look-up,
counted against the customer's quota."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from crm.settings import today_in_lima
from models.read_api import BalancesAnswer, Error, OffersAnswer, TransactionsAnswer
from serving.access import LOOKUPS, Access, AudienceRouter, caller
from serving.answers import errors
from serving.auth import CUSTOMERS
from serving.hotpath import MY_OFFERS_PATH
from serving.mobile_bank import MAX_DAYS, BankUnavailable, NotTheBanks

router = AudienceRouter(Access(roles=CUSTOMERS, quota=LOOKUPS), tags=["customers"])


@router.get(
    MY_OFFERS_PATH,
    response_model=OffersAnswer,
    responses=errors(429, 503),
    summary="The signed-in customer's offers (the mobile app)",
)
async def my_offers(request: Request) -> Response:
    """The offers of the customer the bearer token names, best first, without scores or reasons
    (an empty list when they have none today). Audited like every look-up."""
    status, body, headers = await request.app.state.read_offers(caller(request), request.scope["crm.customer_id"])
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def from_the_bank(request: Request, read) -> Response:
    """``read(customer_id)`` from the bank for the signed-in customer; 503 with Retry-After while
    the bank's API is failing. Never cached."""
    try:
        body = await read(request.scope["crm.customer_id"])
    except BankUnavailable as down:
        return JSONResponse({"detail": down.detail}, status_code=503, headers={"Retry-After": str(down.retry_after)})
    except NotTheBanks:
        raise HTTPException(404, detail="the bank does not know this customer") from None
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


BANK_ERRORS = {
    **errors(404, 429),
    503: {"model": Error, "description": "The bank's API is failing: retry after Retry-After seconds"},
}


@router.get(
    "/v1/me/balances",
    response_model=BalancesAnswer,
    responses=BANK_ERRORS,
    summary="The signed-in customer's accounts and balances, from the bank (the mobile app)",
)
async def my_balances(request: Request) -> Response:
    """Read from the bank's integration API at the call (today in Lima), not from the snapshot;
    account numbers masked. Audited like every look-up."""
    bank = request.app.state.bank
    return await from_the_bank(request, lambda customer_id: bank.balances(customer_id, today_in_lima()))


@router.get(
    "/v1/me/transactions",
    response_model=TransactionsAnswer,
    responses=BANK_ERRORS,
    summary="The signed-in customer's transactions, newest first, a page at a time (the mobile app)",
)
async def my_transactions(
    request: Request,
    date_from: Annotated[
        dt.date | None, Query(alias="from", description="first booking date; default: 29 days before to")
    ] = None,
    date_to: Annotated[
        dt.date | None, Query(alias="to", description="last booking date; default: today in Lima")
    ] = None,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,7}$", description="next_cursor of the previous page")
    ] = None,
) -> Response:
    """Read from the bank's integration API at the call, 50 a page; at most 92 days a request."""
    last = date_to or today_in_lima()
    first = date_from or max(last, dt.date.min + dt.timedelta(days=29)) - dt.timedelta(days=29)  # no overflow at year 1
    if first > last or (last - first).days >= MAX_DAYS:
        why = "from is after to" if first > last else f"from..to spans more than {MAX_DAYS} days"
        raise RequestValidationError([{"loc": ("query", "from"), "msg": why, "type": "value_error"}])
    bank = request.app.state.bank
    return await from_the_bank(request, lambda customer_id: bank.transactions(customer_id, first, last, cursor))
