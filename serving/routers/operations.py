"""Operations: the probes, the Prometheus metrics and, outside production, ``/docs``. Public: they
read nothing of any customer, and name no caller."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.read_api import Readiness
from serving.access import Access, AudienceRouter
from serving.answers import REDIS_ERRORS, freshness

PROBE = Access(public="a probe of the process: Kubernetes calls it with no credential")
SCRAPE = Access(public="Prometheus scrapes it; with CRM_METRICS_PORT, only on that port (serving.hotpath.MetricsPort)")
DOCS = Access(public="the API's description, outside production only")
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI's, packaged

router = AudienceRouter(tags=["ops"])


@router.get("/healthz", access=PROBE, summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    access=PROBE,
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis unreachable, or no snapshot is live"}},
    summary="Ready to answer: Redis reachable and a snapshot live",
)
async def readyz(request: Request) -> JSONResponse:
    try:
        sid, meta = await request.app.state.reader.live_meta()
    except REDIS_ERRORS:
        return JSONResponse({"ready": False, "reason": "redis unreachable"}, status_code=503)
    if sid is None:
        return JSONResponse({"ready": False, "reason": "no live snapshot"}, status_code=503)
    fresh = freshness(meta)["fresh"] if meta else False
    return JSONResponse({"ready": True, "snapshot_id": sid, "fresh": fresh})


@router.get(
    "/metrics",
    access=SCRAPE,
    response_class=PlainTextResponse,
    summary="Prometheus metrics: requests by endpoint and status, latency, the live snapshot's age",
)
async def prometheus_metrics(request: Request) -> Response:
    state = request.app.state
    try:
        _, meta = await state.reader.live_meta()
    except REDIS_ERRORS:
        meta = None
    state.metrics.note_snapshot(meta)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ``/docs`` (Swagger UI) with its scripts and styles served by the API itself: a bank's network
# reaches no CDN. No ``/redoc``: ReDoc's page fetches its logo from Redocly's CDN.
docs = AudienceRouter(include_in_schema=False)


@docs.get("/docs", access=DOCS)
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title}: Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )
