"""What the read API answers besides the data: the snapshot an answer came from, how fresh it is,
and the errors every endpoint documents."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from models.read_api import Error
from serving.auth import API_KEY_SCHEME, BEARER_SCHEME


class NoSnapshot(Exception):
    pass


NO_SNAPSHOT = "no live snapshot: the daily run has not published one"
REDIS_DOWN = "the cache is unreachable"
REDIS_ERRORS = (aioredis.ConnectionError, aioredis.TimeoutError, TimeoutError, OSError)  # Redis down or stalled

ERRORS = {
    401: "Missing, invalid or expired credentials (bearer token or API key)",
    403: "The caller's role may not call this endpoint, or a customer asked for another customer",
    404: "Not in the live snapshot",
    429: "The caller's quota is used up: retry after Retry-After seconds",
    503: "No live snapshot, or the cache is unreachable",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an endpoint behind ``authorize`` (422 FastAPI documents itself)."""
    return {code: {"model": Error, "description": ERRORS[code]} for code in (401, 403, *codes)}


def freshness(meta: dict) -> dict:
    """How old the snapshot is and whether it is still within its TTL (else: stale, in its grace)."""
    now = dt.datetime.now(dt.UTC)
    age = (now - dt.datetime.fromisoformat(meta["created_at"])).total_seconds()
    return {"age_seconds": int(age), "fresh": now < dt.datetime.fromisoformat(meta["expires_at"])}


def answer(sid: str, body: dict[str, Any]) -> JSONResponse:
    """A JSON answer read from snapshot ``sid``, which it names in the body and a header."""
    return JSONResponse({"snapshot_id": sid, **body}, headers={"X-Snapshot-Id": sid})


def raw_json(status: int, body: dict[str, Any], sid: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, headers) for the ASGI fast path, which sends them itself."""
    return status, orjson.dumps(body), ({"X-Snapshot-Id": sid} if sid else {})


def too_many(detail: str, wait_s: float) -> tuple[int, bytes, dict[str, str]]:
    """429 with the seconds to wait (whole, at least 1) in ``Retry-After``."""
    return 429, orjson.dumps({"detail": detail}), {"Retry-After": str(max(1, math.ceil(wait_s)))}


def answer_unavailable_with_503(app: FastAPI) -> None:
    """No live snapshot, or Redis unreachable: 503 with the reason, from any endpoint."""

    @app.exception_handler(NoSnapshot)
    async def no_snapshot(request: Request, exc: NoSnapshot) -> JSONResponse:
        return JSONResponse({"detail": NO_SNAPSHOT}, status_code=503)

    @app.exception_handler(aioredis.ConnectionError)
    @app.exception_handler(aioredis.TimeoutError)
    @app.exception_handler(TimeoutError)  # Redis stalled past the reader's deadline
    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": REDIS_DOWN}, status_code=503)


def openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (made once), with the schemes its endpoints name: bearer tokens
    (people) and API keys (integrations)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["components"]["securitySchemes"] = {
            BEARER_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        app.openapi_schema = schema
    return app.openapi_schema
