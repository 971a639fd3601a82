"""The read API's ASGI layers outside FastAPI: the Prometheus metrics of every answer, and the fast
path of the calls sales and the mobile app make all day (see docs/decisions/0004)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.access import LOOKUPS, Access, lookups_used_up, take_lookup
from serving.answers import NO_SNAPSHOT, REDIS_DOWN, REDIS_ERRORS, NoSnapshot, raw_json, too_many
from serving.audit import call_record, recorded, refuse_unaudited, send_json
from serving.auth import MAX_CUSTOMER_ID, Denied, Principal, canonical_customer_id
from serving.codec import bucket_of
from serving.reader import SnapshotReader

OFFERS_PATH = re.compile(r"/v1/customers/([1-9][0-9]{0,12})/offers")
MY_OFFERS_PATH = "/v1/me/offers"
Answer = tuple[int, bytes, dict[str, str]]  # status, JSON body, headers
ReadOffers = Callable[[Principal, int], Awaitable[Answer]]
INTERNAL_ERROR = b'{"detail":"Internal Server Error"}'
FAST_PATH_HEADERS = frozenset((b"authorization", b"x-api-key", b"accept", b"x-forwarded-for"))


class Metrics:
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

    def note_snapshot(self, meta: dict | None) -> None:
        """The live snapshot's age and size (NaN and 0 when none is live), as of this scrape."""
        if meta:
            created = dt.datetime.fromisoformat(meta["created_at"])
            self.snapshot_age.set((dt.datetime.now(dt.UTC) - created).total_seconds())
            self.snapshot_customers.set(meta["customers"])
        else:
            self.snapshot_age.set(float("nan"))
            self.snapshot_customers.set(0)


class MeasureRequests:
    """Pure ASGI middleware counting requests by route template and status, and their latency."""

    def __init__(self, app, metrics: Metrics):
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
            # the route's template: no ids in labels
            self.note(getattr(scope.get("route"), "path", "unmatched"), scope["method"], status, start)

    def note(self, endpoint: str, method: str, status: int, start: float) -> None:
        """Count one answer of ``endpoint`` and the time since ``start`` (``time.perf_counter``)."""
        series = self.series.get((endpoint, method, status))
        if series is None:
            series = self.series[endpoint, method, status] = (
                self.metrics.requests.labels(endpoint, method, str(status)),
                self.metrics.latency.labels(endpoint),
            )
        series[0].inc()
        series[1].observe(time.perf_counter() - start)


def on_port(scope, port: int | None) -> bool:
    """Whether the request came in on ``port`` (the metrics port; False when there is none)."""
    return port is not None and (scope.get("server") or (None, None))[1] == port


class MetricsPort:
    """With a metrics port of its own, ``/metrics`` answers there only and that port answers nothing
    else (the cluster's scraper reaches it; the public route does not)."""

    NOT_FOUND = b'{"detail":"Not Found"}'

    def __init__(self, app, port: int | None):
        self.app = app
        self.port = port

    async def __call__(self, scope, receive, send):
        if self.port is not None and scope["type"] == "http":
            internal = on_port(scope, self.port)
            if internal != (scope["path"] == "/metrics"):
                await send({"type": "http.response.start", "status": 404, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.NOT_FOUND))]})  # fmt: skip
                await send({"type": "http.response.body", "body": self.NOT_FOUND})
                return
        await self.app(scope, receive, send)


class ReadApi(FastAPI):
    """FastAPI with ASGI layers outside Starlette's own stack: the offers fast path, ahead of
    everything it can skip (it notes its own answers in the metrics), then the metrics port, the
    metrics (every other answer, an unhandled error's 500 included) and the audit layer."""

    outer: Callable[[Any], Any] = staticmethod(lambda inner: inner)

    def build_middleware_stack(self):
        return self.outer(super().build_middleware_stack())


class OffersFastPath:
    """``GET /v1/customers/{id}/offers`` and ``GET /v1/me/offers``, the look-ups sales and the mobile
    app make all day, answered ahead of every other layer and of FastAPI's per-request machinery
    (routing, parameter solving): they cost more CPU than the Redis read itself. This layer does
    for its calls what the layers behind it do for the others: it admits the caller by the
    ``Access`` the two routes declare (roles, look-up quota), records each call on the audit
    ``trail`` and its answer in ``measure`` (the metrics), and leaves the metrics port to
    ``MetricsPort``. It and the FastAPI routes read offers with the same ``read_offers``; what this
    layer does not recognise as a valid call (a malformed or out-of-range id, another method, a
    query string) goes on to FastAPI, which answers it (422, 405) as documented.
    """

    def __init__(
        self,
        app,
        state,
        read_offers: ReadOffers,
        routes: dict[str, Access],
        trail,
        measure: MeasureRequests,
        metrics_port: int | None,
    ):
        self.app = app
        self.state = state  # the credentials gate, the look-up quota, the snapshot reader
        self.read_offers = read_offers
        self.trail = trail
        self.measure = measure
        self.metrics_port = metrics_port  # its requests are MetricsPort's to answer
        (self.route_path,) = (path for path in routes if path != MY_OFFERS_PATH)  # the metrics' label
        for path, access in routes.items():
            if access.quota != LOOKUPS or access.console or access.public:
                raise ValueError(
                    f"the offers fast path answers look-ups by header credential; {path} declares {access}"
                )
        self.staff, self.own = routes[self.route_path], routes[MY_OFFERS_PATH]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            # a query string may carry a credential: the audit layer refuses and records it
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == MY_OFFERS_PATH:
            customer_id, endpoint, access = None, MY_OFFERS_PATH, self.own
        else:
            match = OFFERS_PATH.fullmatch(path)
            if match is None or (customer_id := int(match[1])) > MAX_CUSTOMER_ID:
                return await self.app(scope, receive, send)
            endpoint, access = self.route_path, self.staff
        if on_port(scope, self.metrics_port):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        # a header sent twice counts by its first value, as Starlette's ``Headers.get`` and the
        # audit layer read it on every other call
        seen: dict[bytes, str] = {}
        for k, v in scope["headers"]:
            if k in FAST_PATH_HEADERS and k not in seen:
                seen[k] = v.decode("latin-1")
        authorization, api_key = seen.get(b"authorization"), seen.get(b"x-api-key")
        read = seen.get(b"accept"), seen.get(b"x-forwarded-for")
        status = 500  # the metrics count what was answered: 500 until an answer starts
        try:
            try:
                answer, body, headers = await self.lookup(scope, authorization, api_key, customer_id, access)
            except Exception:  # on record as every call is, then as any unhandled error
                if recorded(self.trail, call_record(scope, 500, None, read)):
                    await send_json(send, 500, INTERNAL_ERROR)
                else:
                    status = 503
                    await refuse_unaudited(send)
                raise
            if not recorded(self.trail, call_record(scope, answer, headers.get("X-Snapshot-Id"), read)):
                status = 503
                await refuse_unaudited(send)
                return
            status = answer
            await send_json(send, status, body, headers)
        finally:
            self.measure.note(endpoint, "GET", status, start)

    async def lookup(
        self, scope: dict, authorization: str | None, api_key: str | None, customer_id: int | None, access: Access
    ) -> Answer:
        """The caller admitted as ``access`` says (else 401, 403, 429), then the customer's offers
        (``customer_id`` None: the calling customer's own). The caller and the customer go in
        ``scope``, where the audit layer finds them."""
        state = self.state
        scope["crm.customer_id"] = customer_id
        try:
            who = state.gate.check(authorization, api_key, access.roles)
        except Denied as denied:
            scope["crm.principal"] = denied.who
            return raw_json(denied.status, {"detail": denied.detail})
        scope["crm.principal"] = who
        if customer_id is None:
            customer_id = scope["crm.customer_id"] = canonical_customer_id(who.subject)
        try:
            wait = await take_lookup(state, who)
        except REDIS_ERRORS:
            return raw_json(503, {"detail": REDIS_DOWN})
        if wait is not None:
            return too_many(lookups_used_up(state.lookups.limit), wait)
        return await self.read_offers(who, customer_id)


def make_offers_reader(reader: SnapshotReader) -> ReadOffers:
    """The read of one customer's offers from the live snapshot, for a caller already admitted."""

    async def read_offers(who: Principal, customer_id: int) -> Answer:
        """A customer's offers as (status, JSON body, headers): the one implementation behind the
        FastAPI routes, ``OffersFastPath`` and the console's customer page."""
        mobile = who.kind == "customer"  # the app sees what to show, not the scores or the reasons

        async def read(sid: str):
            bucket, field = bucket_of(customer_id), str(customer_id)
            blob = await reader.raw.hget(reader.keys.customer_bucket(sid, bucket), field)
            if blob is None:
                # sales: a customer the snapshot knows (a masked profile of customer_360 for the date)
                # has no offers today, an empty list; only one it does not know is a 404. Marketing
                # is never told whether an id without offers is a customer (404 either way), and the
                # app's own customer gets an empty list below
                if who.role != "sales":
                    return None
                known = await reader.raw.hexists(reader.keys.profile_bucket(sid, bucket), field)
                return b"[]" if known else None
            encoder = await reader.offers_json(sid)
            return encoder.encode(blob, mobile) if encoder is not None else None

        try:
            sid, offers = await reader.in_snapshot(read)
        except NoSnapshot:
            return raw_json(503, {"detail": NO_SNAPSHOT})
        except REDIS_ERRORS:
            return raw_json(503, {"detail": REDIS_DOWN})
        if offers is None:
            if mobile:  # the token proves the bank knows the customer: no offers today
                offers = b"[]"
            else:
                return raw_json(404, {"detail": f"customer {customer_id} is not in the live snapshot"})
        body = b'{"snapshot_id":%b,"customer_id":%d,"offers":%b}' % (orjson.dumps(sid), customer_id, offers)
        return 200, body, {"X-Snapshot-Id": sid}

    return read_offers
