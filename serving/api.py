"""The read API over the live Redis snapshot: marketing segments, sales and mobile offers.

Every response names the snapshot it was read from (``snapshot_id`` and ``X-Snapshot-Id``); a
request reads one snapshot only, retrying once when the snapshot switched under it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gc
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from crm.cache import connect_async
from crm.services import READ_API_CLIENT_NAME
from crm.settings import Settings, get_settings
from models.core_banking import Channel
from models.serving import (
    MOBILE_FIELDS,
    CampaignsAnswer,
    Error,
    OffersAnswer,
    Readiness,
    SegmentPage,
    SnapshotAnswer,
)
from serving.auth import hash_key, load_key_store
from serving.codec import SEGMENT, Dictionary, bucket_of, decode_offers, decode_segment
from serving.keys import Keys


class AuditLog:
    """Who looked up which customer, when: one JSON line per look-up, and no other personal data.

    Lines are buffered and appended to the file every ``interval`` seconds (and at shutdown), so a
    look-up never waits on the disk.
    """

    def __init__(self, path: FilePath, interval: float = 0.2):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.interval = interval
        self.entries: list[tuple[int, str, str, int]] = []

    def record(self, who: Principal, customer_id: int) -> None:
        self.entries.append((int(time.time()), who.role, who.key_id, customer_id))  # formatted at flush

    def flush(self) -> None:
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        stamps: dict[int, str] = {}
        lines = []
        for at, role, key_id, customer_id in entries:
            if at not in stamps:
                stamps[at] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
            entry = {"at": stamps[at], "role": role, "key_id": key_id, "customer_id": customer_id}
            lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        with open(self.path, "ab") as fh:
            fh.write(b"".join(lines))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()


T = TypeVar("T")

SID_CACHE_S = 0.25  # how stale the API's idea of the live snapshot id may be
MAX_CUSTOMER_ID = 10**12
CustomerId = Annotated[int, Path(gt=0, le=MAX_CUSTOMER_ID, description="core-banking customer id")]
CampaignId = Annotated[str, Path(pattern=r"^[A-Z0-9][A-Z0-9-]{1,63}$")]


def _freshness(meta: dict) -> dict:
    """How old the snapshot is and whether it is still within its TTL (else: stale, in its grace)."""
    now = dt.datetime.now(dt.UTC)
    age = (now - dt.datetime.fromisoformat(meta["created_at"])).total_seconds()
    return {"age_seconds": int(age), "fresh": now < dt.datetime.fromisoformat(meta["expires_at"])}


class _Metrics:
    """The API's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "crm_api_requests", "Requests answered", ["endpoint", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "crm_api_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.snapshot_age = Gauge(
            "crm_snapshot_age_seconds", "Age of the live snapshot (NaN: none is live)", registry=self.registry
        )
        self.snapshot_customers = Gauge(
            "crm_snapshot_customers", "Customers in the live snapshot", registry=self.registry
        )


class _MeasureRequests:
    """Pure ASGI middleware counting requests by route template and status, and their latency."""

    def __init__(self, app, metrics: _Metrics):
        self.app = app
        self.metrics = metrics
        self.series: dict[tuple[str, str, int], tuple] = {}  # labelled children, looked up once

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")  # the template: no ids in labels
            series = self.series.get((endpoint, scope["method"], status))
            if series is None:
                series = self.series[endpoint, scope["method"], status] = (
                    self.metrics.requests.labels(endpoint, scope["method"], str(status)),
                    self.metrics.latency.labels(endpoint),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - start)


class _ReadApi(FastAPI):
    """FastAPI with ASGI layers outside Starlette's own stack: the metrics (they see every answer,
    an unhandled error's 500 included) and the offers fast path, ahead of everything it can skip."""

    outer: Callable[[Any], Any] = staticmethod(lambda inner: inner)

    def build_middleware_stack(self):
        return self.outer(super().build_middleware_stack())


OFFERS_PATH = re.compile(r"/v1/customers/([1-9][0-9]{0,12})/offers")


class _OffersFastPath:
    """``GET /v1/customers/{id}/offers``, the look-up sales and the mobile app make all day, answered
    without FastAPI's per-request machinery (routing, parameter solving): it costs more CPU than the
    Redis read itself. Both this layer and the documented FastAPI route call the same ``lookup``;
    what this layer does not recognise as a valid call (a malformed or out-of-range id, another
    method) goes on to FastAPI, which answers it (422, 405) as documented.
    """

    def __init__(self, app, lookup, route_path: str):
        self.app = app
        self.lookup = lookup
        self.route = type("Route", (), {"path": route_path})()  # what _MeasureRequests labels by

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            match = OFFERS_PATH.fullmatch(scope["path"])
            if match and int(match[1]) <= MAX_CUSTOMER_ID:
                key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-api-key"), None)
                status, body, headers = await self.lookup(key, int(match[1]))
                scope["route"] = self.route
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                            *((k.encode(), v.encode()) for k, v in headers.items()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class Principal:
    def __init__(self, key_id: str, role: str):
        self.key_id = key_id
        self.role = role


class NoSnapshot(Exception):
    pass


NO_SNAPSHOT = "no live snapshot: the daily run has not published one"
REDIS_DOWN = "the cache is unreachable"


async def _segment_csv(raw: aioredis.Redis, key: str, d: Dictionary, chunk: int = 10_000) -> AsyncIterator[str]:
    """The whole segment as CSV, in priority order, read from Redis a chunk at a time."""
    yield "position,customer_id,offer_id,channel,priority\n"
    size = SEGMENT.itemsize
    start = 0
    while True:
        blob = await raw.getrange(key, start * size, (start + chunk) * size - 1)
        if not blob:
            return
        rows = decode_segment(blob, d, start + 1)
        yield "".join(
            f"{e['position']},{e['customer_id']},{e['offer_id']},{e['channel']},{e['priority']:.2f}\n" for e in rows
        )
        start += chunk


API_KEY_SCHEME = "ApiKey"
MARKETING_SALES = ("marketing", "sales")
MARKETING = ("marketing",)
OFFER_READERS = ("sales", "mobile", "marketing")


class Denied(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def check_key(key_store: dict[str, dict], key: str | None, roles: tuple[str, ...]) -> Principal:
    """The API key must be known (else 401) and hold one of ``roles`` (else 403)."""
    entry = key_store.get(_hashed(key)) if key else None
    if entry is None:
        raise Denied(401, "missing or unknown API key (header X-API-Key)")
    if entry["role"] not in roles:
        raise Denied(403, f"the {entry['role']} role may not call this endpoint")
    return Principal(entry["key_id"], entry["role"])


@functools.lru_cache(maxsize=1024)
def _hashed(key: str) -> str:
    """SHA-256 of a key, remembered: the same few keys call all day (bounded: made-up keys cannot
    grow it)."""
    return hash_key(key)


def authorize(request: Request, roles: tuple[str, ...]) -> Principal:
    """``check_key`` for an endpoint: a plain call at its top rather than a FastAPI dependency
    (resolving one costs more than the look-up it guards); ``for_roles`` documents it."""
    try:
        return check_key(request.app.state.key_store, request.headers.get("x-api-key"), roles)
    except Denied as denied:
        raise HTTPException(denied.status, detail=denied.detail) from None


def for_roles(*roles: str) -> dict[str, Any]:
    """OpenAPI of an endpoint behind ``authorize``: the X-API-Key scheme and the roles it admits."""
    return {"security": [{API_KEY_SCHEME: []}], "x-roles": list(roles)}


_ERRORS = {
    401: "Missing or unknown API key",
    403: "The key's role may not call this endpoint",
    404: "Not in the live snapshot",
    503: "No live snapshot, or the cache is unreachable",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an endpoint behind ``authorize`` (422 FastAPI documents itself)."""
    return {code: {"model": Error, "description": _ERRORS[code]} for code in (401, 403, *codes)}


def create_app(redis_url: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = Keys(settings.redis_prefix)
    key_store = load_key_store(settings.api_keys_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # no per-command timeout on the look-up client: redis-py wraps every send in a task for it,
        # which costs more than the look-up; a dead Redis still fails fast (connection errors)
        app.state.redis = connect_async(redis_url, decode_responses=True, client_name=READ_API_CLIENT_NAME)
        app.state.raw = connect_async(redis_url, client_name=READ_API_CLIENT_NAME, socket_timeout=None)
        app.state.audit = AuditLog(settings.audit_log_path)
        flusher = asyncio.create_task(app.state.audit.run())
        # everything alive after start-up (modules, the app) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall look-ups for tens of ms
        gc.collect()
        gc.freeze()
        yield
        flusher.cancel()
        app.state.audit.flush()
        await app.state.redis.aclose()
        await app.state.raw.aclose()

    app = _ReadApi(
        title="CRM campaign assignments",
        description=(
            "Today's campaign assignments, served from the live Redis snapshot. Every call but the ops "
            "probes needs an `X-API-Key`; each endpoint names the roles (`x-roles`) it admits. Every "
            "answer names the snapshot it was read from (`snapshot_id` and the `X-Snapshot-Id` header)."
        ),
        version="1.0",
        lifespan=lifespan,
    )
    app.state.key_store = key_store
    metrics = _Metrics()

    live = {"sid": None, "until": 0.0}  # the live snapshot id, re-read at most every SID_CACHE_S

    async def current_sid(fresh: bool = False) -> str:
        now = time.monotonic()
        if fresh or now >= live["until"]:
            sid = await app.state.redis.get(keys.current)
            if sid is None:
                raise NoSnapshot
            live["sid"], live["until"] = sid, now + SID_CACHE_S
        return live["sid"]

    async def in_snapshot(read: Callable[[str], Awaitable[T | None]]) -> tuple[str, T | None]:
        """Run ``read`` against one snapshot, the live one; every read names the snapshot it used.

        The live id is cached for ``SID_CACHE_S``: a read that finds nothing (the snapshot it knew
        was just replaced and dropped) asks Redis again and reads once more from the live one.
        """
        sid = await current_sid()
        value = await read(sid)
        if value is None:
            latest = await current_sid(fresh=True)
            if latest != sid:
                sid, value = latest, await read(latest)
        return sid, value

    async def snapshot_json(key_of: Callable[[str], str]) -> tuple[str, Any]:
        """A JSON value of the live snapshot (its metadata, its campaign list)."""

        async def read(sid: str):
            raw = await app.state.redis.get(key_of(sid))
            return json.loads(raw) if raw is not None else None

        sid, value = await in_snapshot(read)
        if value is None:
            raise NoSnapshot
        return sid, value

    dictionaries: dict[str, Dictionary] = {}

    async def dictionary(sid: str) -> Dictionary | None:
        """The snapshot's dictionary (ids behind the packed codes), read once per snapshot."""
        d = dictionaries.get(sid)
        if d is None:
            raw = await app.state.redis.get(keys.meta(sid))
            if raw is None:
                return None
            d = Dictionary.from_json(json.loads(raw)["dictionary"])
            if len(dictionaries) >= 4:
                dictionaries.pop(next(iter(dictionaries)))
            dictionaries[sid] = d
        return d

    def answer(sid: str, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"snapshot_id": sid, **body}, headers={"X-Snapshot-Id": sid})

    @app.exception_handler(NoSnapshot)
    async def no_snapshot(request: Request, exc: NoSnapshot) -> JSONResponse:
        return JSONResponse({"detail": NO_SNAPSHOT}, status_code=503)

    @app.exception_handler(aioredis.ConnectionError)
    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": REDIS_DOWN}, status_code=503)

    # the endpoints answer with JSONResponse directly (no response-model validation per call); the
    # models in models.serving document the shapes, and the tests check answers against them

    def _json(status: int, body: dict[str, Any], sid: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        return status, orjson.dumps(body), ({"X-Snapshot-Id": sid} if sid else {})

    async def offers_lookup(key: str | None, customer_id: int) -> tuple[int, bytes, dict[str, str]]:
        """A customer's offers as (status, JSON body, headers): the one implementation behind both
        the FastAPI route and ``_OffersFastPath``."""
        try:
            who = check_key(app.state.key_store, key, OFFER_READERS)
        except Denied as denied:
            return _json(denied.status, {"detail": denied.detail})
        app.state.audit.record(who, customer_id)

        async def read(sid: str):
            blob = await app.state.raw.hget(keys.customer_bucket(sid, bucket_of(customer_id)), str(customer_id))
            if blob is None:
                return None
            d = await dictionary(sid)
            return decode_offers(blob, d) if d is not None else None

        try:
            sid, offers = await in_snapshot(read)
        except NoSnapshot:
            return _json(503, {"detail": NO_SNAPSHOT})
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return _json(503, {"detail": REDIS_DOWN})
        if offers is None:
            return _json(404, {"detail": f"customer {customer_id} has no offers in the live snapshot"})
        if who.role == "mobile":
            offers = [{k: o[k] for k in MOBILE_FIELDS} for o in offers]
        return _json(200, {"snapshot_id": sid, "customer_id": customer_id, "offers": offers}, sid)

    customer_offers_path = "/v1/customers/{customer_id}/offers"

    @app.get(
        customer_offers_path,
        tags=["customers"],
        response_model=OffersAnswer,
        responses=_errors(404, 503),
        openapi_extra=for_roles(*OFFER_READERS),
        summary="One customer's ranked offers",
    )
    async def customer_offers(request: Request, customer_id: CustomerId) -> Response:
        """The customer's offers, best first. The mobile role gets no propensity, priority or reasons.
        Every call is written to the audit log (role, key id, customer id, time)."""
        status, body, headers = await offers_lookup(request.headers.get("x-api-key"), customer_id)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    @app.get(
        "/v1/campaigns",
        tags=["campaigns"],
        response_model=CampaignsAnswer,
        responses=_errors(503),
        openapi_extra=for_roles(*MARKETING_SALES),
        summary="Live campaigns and their assigned customers per channel",
    )
    async def campaigns(request: Request) -> JSONResponse:
        authorize(request, MARKETING_SALES)
        sid, listed = await snapshot_json(keys.campaigns)
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
            **_errors(404, 503),
        },
        openapi_extra=for_roles(*MARKETING),
        summary="A campaign's segment in priority order",
    )
    async def campaign_customers(
        request: Request,
        campaign_id: CampaignId,
        channel: Annotated[
            Channel | None, Query(description="one channel's segment; all channels when left out")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="customers per page")] = 100,
        cursor: Annotated[
            str | None, Query(pattern=r"^\d{1,9}$", description="next_cursor of the previous page")
        ] = None,
    ) -> Response:
        authorize(request, MARKETING)
        start = int(cursor or 0)
        channel_name = channel or "ALL"

        async def read(sid: str):
            d = await dictionary(sid)
            if d is None:
                return None
            if campaign_id not in d.campaigns:
                return "unknown"
            key = keys.segment(sid, campaign_id, channel_name)
            size = SEGMENT.itemsize
            async with request.app.state.raw.pipeline(transaction=False) as pipe:
                pipe.getrange(key, start * size, (start + limit) * size - 1)
                pipe.strlen(key)
                blob, length = await pipe.execute()
            return d, key, blob, length // size

        sid, value = await in_snapshot(read)
        if value is None or value == "unknown":
            raise HTTPException(404, detail=f"campaign {campaign_id} has no assignments in the live snapshot")
        d, key, blob, total = value
        if "text/csv" in request.headers.get("accept", ""):
            return StreamingResponse(
                _segment_csv(request.app.state.raw, key, d),
                media_type="text/csv",
                headers={
                    "X-Snapshot-Id": sid,
                    "Content-Disposition": f'attachment; filename="{campaign_id}-{channel_name}-{sid}.csv"',
                },
            )
        customers = decode_segment(blob, d, start + 1)
        nxt = start + len(customers)
        return answer(
            sid,
            {
                "campaign_id": campaign_id,
                "channel": channel,
                "total": total,
                "customers": customers,
                "next_cursor": str(nxt) if nxt < total else None,
            },
        )

    @app.get(
        "/v1/snapshot",
        tags=["snapshot"],
        response_model=SnapshotAnswer,
        responses=_errors(503),
        openapi_extra=for_roles(*MARKETING_SALES),
        summary="The live snapshot: business date, model, counts, created and expiry times, freshness",
    )
    async def snapshot(request: Request) -> JSONResponse:
        authorize(request, MARKETING_SALES)
        sid, meta = await snapshot_json(keys.meta)
        meta.pop("dictionary", None)
        meta.update(_freshness(meta))
        return answer(sid, {"snapshot": meta})

    async def live_meta() -> tuple[str | None, dict | None]:
        """The live snapshot's id and metadata, read fresh from Redis (the ops probes)."""
        sid = await app.state.redis.get(keys.current)
        raw = await app.state.redis.get(keys.meta(sid)) if sid else None
        return sid, json.loads(raw) if raw else None

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
            sid, meta = await live_meta()
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return JSONResponse({"ready": False, "reason": "redis unreachable"}, status_code=503)
        if sid is None:
            return JSONResponse({"ready": False, "reason": "no live snapshot"}, status_code=503)
        fresh = _freshness(meta)["fresh"] if meta else False
        return JSONResponse({"ready": True, "snapshot_id": sid, "fresh": fresh})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics: requests by endpoint and status, latency, the live snapshot's age",
    )
    async def prometheus_metrics(request: Request) -> Response:
        try:
            _, meta = await live_meta()
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            meta = None
        if meta:
            created = dt.datetime.fromisoformat(meta["created_at"])
            metrics.snapshot_age.set((dt.datetime.now(dt.UTC) - created).total_seconds())
            metrics.snapshot_customers.set(meta["customers"])
        else:
            metrics.snapshot_age.set(float("nan"))
            metrics.snapshot_customers.set(0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema["components"]["securitySchemes"] = {
                API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    app.outer = lambda inner: _MeasureRequests(
        _OffersFastPath(inner, lookup=offers_lookup, route_path=customer_offers_path), metrics=metrics
    )
    return app
