"""The read API over the live Redis snapshot: marketing segments, sales and mobile offers.

Every response names the snapshot it was read from (``snapshot_id`` and ``X-Snapshot-Id``); a
request reads one snapshot only, retrying once when the snapshot switched under it. This module
holds the app and its routes; the ASGI layers are in ``serving.hotpath``, the keys and roles in
``serving.auth``, the audit log in ``serving.audit``, the answers and errors in ``serving.answers``
and the Redis reads in ``serving.reader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated

import fastapi_offline
import redis.asyncio as aioredis
import structlog
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crm.settings import Settings, get_settings, today_in_lima
from models.core_banking import Channel
from models.read_api import (
    BalancesAnswer,
    CampaignsAnswer,
    Error,
    OffersAnswer,
    Readiness,
    SegmentPage,
    SnapshotAnswer,
    TransactionsAnswer,
)
from serving import console, segments
from serving.answers import (
    answer,
    answer_unavailable_with_503,
    errors,
    freshness,
    openapi_with_security,
    too_many,
)
from serving.audit import AuditCalls, AuditTrail, load_keys
from serving.auth import (
    CUSTOMERS,
    MARKETING,
    MARKETING_SALES,
    MAX_CUSTOMER_ID,
    Gate,
    authorize,
    canonical_customer_id,
    for_roles,
)
from serving.hotpath import (
    MY_OFFERS_PATH,
    MeasureRequests,
    Metrics,
    MetricsPort,
    OffersFastPath,
    ReadApi,
    make_offers_lookup,
)
from serving.keys import Keys
from serving.mobile_bank import MAX_DAYS, BankUnavailable, CustomerBank, NotTheBanks
from serving.quotas import SYNC_S, LookupQuota
from serving.reader import SnapshotReader

log = structlog.get_logger(__name__)
CustomerId = Annotated[int, Path(gt=0, le=MAX_CUSTOMER_ID, description="core-banking customer id")]


REDIS_ERRORS = (aioredis.ConnectionError, aioredis.TimeoutError, TimeoutError, OSError)


async def _sync_with_redis(state, reader: SnapshotReader) -> None:
    """Every SYNC_S: this worker's look-up counts into Redis and every worker's totals back, and the
    tokens signed out in any worker."""
    while True:
        await asyncio.sleep(SYNC_S)
        # Redis down: the look-ups answer 503 meanwhile, and counting resumes with it
        with contextlib.suppress(*REDIS_ERRORS):
            await state.lookups.sync(reader.text)
        with contextlib.suppress(*REDIS_ERRORS):
            await state.gate.revoked.sync(reader.text)


async def _seal_audit_trail(trail: AuditTrail, every_s: float) -> None:
    """Seal this process's audit file every ``every_s`` seconds it wrote something."""
    while True:
        await asyncio.sleep(every_s)
        try:
            trail.checkpoint()
        except OSError as exc:  # the next record's write fails too, and answers 503
            log.error("audit trail: the seal could not be written", error=str(exc))


DOCS_ASSETS = FilePath(fastapi_offline.__file__).parent / "static"  # Swagger UI's and ReDoc's, packaged


def _docs_offline(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) with its scripts and styles served by the API itself: a bank's network
    reaches no CDN. No ``/redoc``: ReDoc's page fetches its logo from Redocly's CDN."""
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title}: Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )


def create_app(redis_url: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = Keys(settings.redis_prefix)
    reader = SnapshotReader(keys, settings.redis_deadline_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reader.open(redis_url)
        with contextlib.suppress(*REDIS_ERRORS):  # the sessions signed out before this worker started
            await app.state.gate.revoked.sync(reader.text)
        syncing = asyncio.create_task(_sync_with_redis(app.state, reader))
        sealing = asyncio.create_task(_seal_audit_trail(trail, settings.audit_seal_s))
        # everything alive after start-up (modules, the app) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall look-ups for tens of ms
        gc.collect()
        gc.freeze()
        yield
        syncing.cancel()
        sealing.cancel()
        trail.close()
        await reader.close()

    app = ReadApi(
        title="CRM campaign assignments",
        description=(
            "Today's campaign assignments, served from the live Redis snapshot. People call with "
            "`Authorization: Bearer <token>` from the bank's identity provider (customers: their own "
            "offers at `/v1/me/offers`; staff: the role sales or marketing); the bank's systems with "
            "an integration `X-API-Key`. Each endpoint names the roles (`x-roles`) it admits. Every "
            "answer names the snapshot it was read from (`snapshot_id` and the `X-Snapshot-Id` header)."
        ),
        version="1.0",
        lifespan=lifespan,
        # /docs is served offline below (no /redoc); production publishes no API description (the
        # bank's API catalogue holds the document)
        docs_url=None,
        redoc_url=None,
        **({"openapi_url": None} if settings.production else {}),
    )
    # every setting production needs is resolved before anything is written (fail closed, named)
    app.state.gate = Gate(settings)
    if settings.production:  # the mobile app's balances come from the bank's API, never the sandbox
        _ = settings.core_api
    audit_keys = load_keys(settings.audit_key_path, create=not settings.production)
    trail = app.state.trail = AuditTrail(settings.audit_dir, audit_keys)
    app.state.lookups = LookupQuota(settings.redis_prefix, settings.quota_lookups_per_minute)
    app.state.reader = reader
    metrics = Metrics()

    answer_unavailable_with_503(app)

    @app.exception_handler(segments.QuotaUsedUp)
    async def quota_used_up(request: Request, exc: segments.QuotaUsedUp) -> Response:
        return exc.answer()

    # the endpoints answer with JSONResponse directly (no response-model validation per call); the
    # models in models.read_api document the shapes, and the tests check answers against them

    offers_lookup = make_offers_lookup(app.state, reader)

    customer_offers_path = "/v1/customers/{customer_id}/offers"

    @app.get(
        customer_offers_path,
        tags=["customers"],
        response_model=OffersAnswer,
        responses=errors(404, 429, 503),
        openapi_extra=for_roles(*MARKETING_SALES),
        summary="One customer's ranked offers (staff and integrations)",
    )
    async def customer_offers(request: Request, customer_id: CustomerId) -> Response:
        """The customer's offers, best first, with propensity, priority and the reasons in plain
        language. For sales, an empty list for a customer of the snapshot's date with no offers
        today and 404 for a customer the snapshot does not know; marketing gets 404 for any id
        without offers (it is not told who is a customer). Every call is written to the audit trail (who, role,
        what, outcome, source, time)."""
        h = request.headers
        status, body, headers = await offers_lookup(
            request.scope, h.get("authorization"), h.get("x-api-key"), customer_id
        )
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    @app.get(
        MY_OFFERS_PATH,
        tags=["customers"],
        response_model=OffersAnswer,
        responses=errors(429, 503),
        openapi_extra=for_roles(*CUSTOMERS),
        summary="The signed-in customer's offers (the mobile app)",
    )
    async def my_offers(request: Request) -> Response:
        """The offers of the customer the bearer token names, best first, without scores or reasons
        (an empty list when they have none today). Audited like every look-up."""
        h = request.headers
        status, body, headers = await offers_lookup(request.scope, h.get("authorization"), h.get("x-api-key"), None)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    bank = app.state.bank = CustomerBank(settings)

    async def from_the_bank(request: Request, read) -> Response:
        """``read(customer_id)`` from the bank for the signed-in customer, counted against their
        look-up quota; 503 with Retry-After while the bank's API is failing. Never cached."""
        who = authorize(request, CUSTOMERS)
        customer_id = request.scope["crm.customer_id"] = canonical_customer_id(who.subject)
        async with asyncio.timeout(settings.redis_deadline_s):
            wait = await app.state.lookups.take(reader.text, who)
        if wait is not None:
            status, body, headers = too_many(f"quota of {app.state.lookups.limit} look-ups a minute used up", wait)
            return Response(body, status_code=status, headers=headers, media_type="application/json")
        try:
            body = await read(customer_id)
        except BankUnavailable as down:
            return JSONResponse(
                {"detail": down.detail}, status_code=503, headers={"Retry-After": str(down.retry_after)}
            )
        except NotTheBanks:
            raise HTTPException(404, detail="the bank does not know this customer") from None
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    bank_errors = {
        **errors(404, 429),
        503: {"model": Error, "description": "The bank's API is failing: retry after Retry-After seconds"},
    }

    @app.get(
        "/v1/me/balances",
        tags=["customers"],
        response_model=BalancesAnswer,
        responses=bank_errors,
        openapi_extra=for_roles(*CUSTOMERS),
        summary="The signed-in customer's accounts and balances, from the bank (the mobile app)",
    )
    async def my_balances(request: Request) -> Response:
        """Read from the bank's integration API at the call (today in Lima), not from the snapshot;
        account numbers masked. Audited like every look-up."""
        return await from_the_bank(request, lambda customer_id: bank.balances(customer_id, today_in_lima()))

    @app.get(
        "/v1/me/transactions",
        tags=["customers"],
        response_model=TransactionsAnswer,
        responses=bank_errors,
        openapi_extra=for_roles(*CUSTOMERS),
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
        first = date_from or last - dt.timedelta(days=29)
        if first > last or (last - first).days >= MAX_DAYS:
            why = "from is after to" if first > last else f"from..to spans more than {MAX_DAYS} days"
            raise RequestValidationError([{"loc": ("query", "from"), "msg": why, "type": "value_error"}])
        return await from_the_bank(request, lambda customer_id: bank.transactions(customer_id, first, last, cursor))

    @app.get(
        "/v1/campaigns",
        tags=["campaigns"],
        response_model=CampaignsAnswer,
        responses=errors(503),
        openapi_extra=for_roles(*MARKETING_SALES),
        summary="Live campaigns and their assigned customers per channel",
    )
    async def campaigns(request: Request) -> JSONResponse:
        authorize(request, MARKETING_SALES)
        sid, listed = await reader.json(keys.campaigns)
        return answer(sid, {"campaigns": listed})

    @app.get(
        "/v1/campaigns/{campaign_id}/customers",
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
        openapi_extra=for_roles(*MARKETING),
        summary="A campaign's segment in priority order",
    )
    async def campaign_customers(
        request: Request,
        campaign_id: segments.CampaignId,
        channel: Annotated[
            Channel | None, Query(description="one channel's segment; all channels when left out")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="customers per page")] = 100,
        cursor: Annotated[
            str | None, Query(pattern=r"^\d{1,9}$", description="next_cursor of the previous page")
        ] = None,
    ) -> Response:
        who = authorize(request, MARKETING)
        if "text/csv" in request.headers.get("accept", ""):
            return await segments.export_csv(reader, settings, who, campaign_id, channel)
        sid, page = await segments.read_page(reader, settings, who, campaign_id, channel, int(cursor or 0), limit)
        return answer(sid, page)

    @app.get(
        "/v1/snapshot",
        tags=["snapshot"],
        response_model=SnapshotAnswer,
        responses=errors(503),
        openapi_extra=for_roles(*MARKETING_SALES),
        summary="The live snapshot: business date, model, counts, created and expiry times, freshness",
    )
    async def snapshot(request: Request) -> JSONResponse:
        authorize(request, MARKETING_SALES)
        sid, meta = await reader.json(keys.meta)
        for internal in ("dictionary", "performance", "profile_segments"):  # the snapshot's own, for the console
            meta.pop(internal, None)
        meta.update(freshness(meta))
        return answer(sid, {"snapshot": meta})

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Redis unreachable, or no snapshot is live"}},
        summary="Ready to answer: Redis reachable and a snapshot live",
    )
    async def readyz(request: Request) -> JSONResponse:
        try:
            sid, meta = await reader.live_meta()
        except (aioredis.ConnectionError, aioredis.TimeoutError, TimeoutError, OSError):
            return JSONResponse({"ready": False, "reason": "redis unreachable"}, status_code=503)
        if sid is None:
            return JSONResponse({"ready": False, "reason": "no live snapshot"}, status_code=503)
        fresh = freshness(meta)["fresh"] if meta else False
        return JSONResponse({"ready": True, "snapshot_id": sid, "fresh": fresh})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics: requests by endpoint and status, latency, the live snapshot's age",
    )
    async def prometheus_metrics(request: Request) -> Response:
        try:
            _, meta = await reader.live_meta()
        except (aioredis.ConnectionError, aioredis.TimeoutError, TimeoutError, OSError):
            meta = None
        metrics.note_snapshot(meta)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if not settings.production:
        app.openapi = lambda: openapi_with_security(app)
        _docs_offline(app)
    console.install(app, reader, settings, offers_lookup)

    def outer(inner):
        measure = MeasureRequests(AuditCalls(inner, trail), metrics=metrics)
        layers = MetricsPort(measure, settings.metrics_port) if settings.metrics_port else measure
        return OffersFastPath(
            layers, offers_lookup, customer_offers_path, trail, measure=measure, metrics_port=settings.metrics_port
        )

    app.outer = outer
    return app
