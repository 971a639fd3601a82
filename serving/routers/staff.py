"""Staff look-ups: one customer's offers, for sales (and marketing), by bearer token or integration
key. Each call is a look-up, counted against the caller's quota. The same look-up is answered
ahead of FastAPI by the offers fast path (``serving.hotpath``), which reads this route's ``Access``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from models.read_api import OffersAnswer
from serving.access import LOOKUPS, Access, AudienceRouter, caller
from serving.answers import errors
from serving.auth import MARKETING_SALES, MAX_CUSTOMER_ID

CUSTOMER_OFFERS_PATH = "/v1/customers/{customer_id}/offers"
CustomerId = Annotated[int, Path(gt=0, le=MAX_CUSTOMER_ID, description="core-banking customer id")]

router = AudienceRouter(Access(roles=MARKETING_SALES, quota=LOOKUPS), tags=["customers"])


@router.get(
    CUSTOMER_OFFERS_PATH,
    response_model=OffersAnswer,
    responses=errors(404, 429, 503),
    summary="One customer's ranked offers (staff and integrations)",
)
async def customer_offers(request: Request, customer_id: CustomerId) -> Response:
    """The customer's offers, best first, with propensity, priority and the reasons in plain
    language. For sales, an empty list for a customer of the snapshot's date with no offers
    today and 404 for a customer the snapshot does not know; marketing gets 404 for any id
    without offers (it is not told who is a customer). Every call is written to the audit trail (who, role,
    what, outcome, source, time)."""
    request.scope["crm.customer_id"] = customer_id  # the id read, however the path spelled it
    status, body, headers = await request.app.state.read_offers(caller(request), customer_id)
    return Response(body, status_code=status, headers=headers, media_type="application/json")
