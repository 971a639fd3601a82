"""The read API over the live Redis snapshot: marketing segments, sales and mobile offers.

Every response names the snapshot it was read from (``snapshot_id`` and ``X-Snapshot-Id``); a
request reads one snapshot only, retrying once when the snapshot switched under it. This module
builds the app: its state, its routers (one per audience, in ``serving.routers``, each route
declaring who may call it: ``serving.access``), the console, and the ASGI layers of
``serving.hotpath`` and ``serving.audit`` around them. The keys and roles are in ``serving.auth``,
the answers and errors in ``serving.answers`` and the Redis reads in ``serving.reader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from crm.settings import Settings
from serving import console, segments
from serving.access import access_of
from serving.answers import REDIS_ERRORS, answer_unavailable_with_503, openapi_with_security
from serving.audit import AuditCalls, AuditTrail, load_keys
from serving.auth import Gate
from serving.hotpath import (
    MY_OFFERS_PATH,
    MeasureRequests,
    Metrics,
    MetricsPort,
    OffersFastPath,
    ReadApi,
    make_offers_reader,
)
from serving.keys import Keys
from serving.mobile_bank import CustomerBank
from serving.quotas import SYNC_S, LookupQuota
from serving.reader import SnapshotReader
from serving.routers import campaigns, operations, own, staff

log = structlog.get_logger(__name__)


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


def create_app(redis_url: str, settings: Settings) -> FastAPI:
    keys = Keys(settings.serving.redis_prefix)
    reader = SnapshotReader(keys, settings.serving.redis_deadline_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reader.open(redis_url)
        with contextlib.suppress(*REDIS_ERRORS):  # the sessions signed out before this worker started
            await app.state.gate.revoked.sync(reader.text)
        syncing = asyncio.create_task(_sync_with_redis(app.state, reader))
        sealing = asyncio.create_task(_seal_audit_trail(trail, settings.identity.audit_seal_s))
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
    app.state.lookups = LookupQuota(settings.serving.redis_prefix, settings.quotas.lookups_per_minute)
    app.state.reader = reader
    answer_unavailable_with_503(app)

    @app.exception_handler(segments.QuotaUsedUp)
    async def quota_used_up(request: Request, exc: segments.QuotaUsedUp) -> Response:
        return exc.answer()

    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.read_offers = make_offers_reader(reader)
    app.state.bank = CustomerBank(settings)
    # the endpoints answer with JSONResponse directly (no response-model validation per call); the
    # models in models.read_api document the shapes, and the tests check answers against them
    for audience in (staff, own, campaigns, operations):
        app.include_router(audience.router)
    if not settings.production:
        app.openapi = lambda: openapi_with_security(app)
        app.mount("/docs-assets", StaticFiles(directory=operations.DOCS_ASSETS), name="docs-assets")
        app.include_router(operations.docs)
    console.install(app)
    fast_routes = {r.path: access_of(r) for r in app.routes if r.path in (staff.CUSTOMER_OFFERS_PATH, MY_OFFERS_PATH)}

    def outer(inner):
        measure = MeasureRequests(AuditCalls(inner, trail), metrics=metrics)
        layers = MetricsPort(measure, settings.metrics_port) if settings.metrics_port else measure
        return OffersFastPath(
            layers,
            app.state,
            app.state.read_offers,
            fast_routes,
            trail,
            measure=measure,
            metrics_port=settings.metrics_port,
        )

    app.outer = outer
    return app
