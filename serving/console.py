"""The staff console at ``/console``: server-rendered pages over the live snapshot, in the read API's
own process (docs/decisions/0012).

- **Sign-in** with the bearer token the bank's identity provider issued the member of staff
  (locally: ``crm token --staff NAME --role marketing|sales``). The token is verified as the API
  verifies it and kept in an HttpOnly, SameSite=Strict cookie scoped to ``/console`` until it
  expires; each page verifies it again. Customers' tokens and integration keys have no console.
- **Marketing**: the live snapshot, the campaigns with their counts by channel, a campaign's
  segment by channel in priority order (paged, and whole as CSV), and its last 30 days of results.
- **Sales**: one customer's offers best first with the reasons, and a masked profile (segment,
  products held, tenure), both published with the snapshot.

Every page names the snapshot it shows, and every page view is written to the audit trail as an
API call is (who, role, what, customer, outcome, snapshot). Every script, style and image is
served from here: the pages work with no internet.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from fastapi import Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.core_banking import Channel
from serving import segments
from serving.access import (
    COOKIE,
    LOOKUPS,
    SEGMENT_ROWS,
    Access,
    AudienceRouter,
    SignInNeeded,
    caller,
    signed_in,
)
from serving.answers import NoSnapshot, freshness
from serving.auth import MARKETING, STAFF_ROLES, Denied, Principal, canonical_customer_id
from serving.codec import BUCKET, EXPERIMENT, decode_profile
from serving.reader import SnapshotReader

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PAGE_SIZE = 50
SALES = ("sales",)
SECURITY_HEADERS = {
    # nothing is loaded from anywhere but here; no inline script, no framing
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # no referrer ever leaves for another site; the console's own forms keep their Origin (under
    # no-referrer a browser sends "Origin: null", which the sign-in check cannot tell from a forgery)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show customer data: nothing stays in the browser's cache
}
HOME_OF = {"marketing": "/console/campaigns", "sales": "/console/customers"}
CROSS_SITE = "Refused: this request came from another site. Sign in and out from the console's own pages."


def same_origin(request: Request) -> bool:
    """Whether a sign-in or sign-out comes from the console's own pages (login and logout CSRF). A
    browser says where a request comes from in ``Sec-Fetch-Site`` (which no page can set), or in
    older browsers ``Origin`` only; either, when sent, must say this site. A client that is not a
    browser sends neither."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


templates = Jinja2Templates(directory=HERE / "templates")


def incremental(treated: int, treated_accepted: int, control: int, control_accepted: int) -> dict[str, float] | None:
    """What contacting the model arm's members added over the control's: treated x (treated rate -
    control rate) acceptances, with its 95% interval (the normal approximation of a difference of
    two rates, its variance from rates with one acceptance and one refusal added to each arm:
    Agresti-Caffo, as ``marts.campaign_performance`` has it per day); None without both arms."""
    if not treated or not control:
        return None
    pt, pc = treated_accepted / treated, control_accepted / control
    at, ac = (treated_accepted + 1) / (treated + 2), (control_accepted + 1) / (control + 2)
    half = 1.96 * treated * math.sqrt(at * (1 - at) / (treated + 2) + ac * (1 - ac) / (control + 2))
    estimate = treated * (pt - pc)
    return {"estimate": estimate, "low": estimate - half, "high": estimate + half, "treated_rate": pt,
            "control_rate": pc, "treated": treated, "control": control}  # fmt: skip


def performance_chart(days: list[dict], width: int = 720, height: int = 220) -> dict[str, Any]:
    """Bar geometry of a campaign's days: contacted and accepted side by side per day, scaled to the
    busiest day; the template draws it as SVG (and lists the same figures in a table)."""
    top = max((max(d["contacted"], d["accepted"]) for d in days), default=0) or 1
    left, bottom, plot_h = 48, height - 28, height - 48
    slot = (width - left - 8) / max(len(days), 1)
    bar = max(slot / 2 - 1, 1)
    bars = []
    for i, d in enumerate(days):
        x = left + i * slot
        for j, (what, value) in enumerate((("contacted", d["contacted"]), ("accepted", d["accepted"]))):
            h = plot_h * value / top
            bars.append({"x": round(x + j * bar, 1), "y": round(bottom - h, 1), "w": round(bar, 1), "h": round(h, 1),
                         "kind": what, "label": f"{d['date']}: {value} {what}"})  # fmt: skip
    ticks = [{"y": round(bottom - plot_h * f, 1), "label": f"{round(top * f):,}"} for f in (0, 0.5, 1)]
    labels = [
        {"x": round(left + i * slot + slot / 2, 1), "text": d["date"][5:]}
        for i, d in enumerate(days)
        if i % 5 == 0 or i == len(days) - 1
    ]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "labels": labels, "left": left,
            "bottom": bottom}  # fmt: skip


def render(
    request: Request,
    template: str,
    who: Principal | None,
    sid: str | None,
    meta: dict | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A console page: the signed-in person, the snapshot it shows (``sid``, its metadata) and
    ``context``; the snapshot's id also in ``X-Snapshot-Id``, where the audit trail reads it."""
    snapshot = {**meta, **freshness(meta)} if meta is not None else None
    headers = {**SECURITY_HEADERS, **({"X-Snapshot-Id": sid} if sid else {})}
    return templates.TemplateResponse(
        request,
        template,
        {"who": who, "snapshot": snapshot, "snapshot_id": sid, **context},
        headers=headers,
        status_code=status_code,
    )


router = AudienceRouter(prefix="/console", include_in_schema=False)
HOME = Access(public="sends to the sign-in page, or the signed-in person's own page: nothing is read")
PAGE = Access(public="the sign-in page and the sign-in itself, which checks the token it is given")
SIGN_OUT = Access(public="signs out whoever the cookie names, if anyone: nothing is read")
CAMPAIGN_PAGES = Access(roles=MARKETING, console=True)
SEGMENT_PAGES = Access(roles=MARKETING, console=True, quota=SEGMENT_ROWS)
# every view of the page counts as a look-up, the search form's included: the page is for reading customers
CUSTOMER_PAGE = Access(roles=SALES, console=True, quota=LOOKUPS)


async def meta_of(reader: SnapshotReader, sid: str, *more: str) -> tuple[dict, list] | None:
    """The snapshot's metadata and ``more`` of its JSON keys, read together; None if it is gone."""
    raws = await reader.text.mget(reader.keys.meta(sid), *more)
    if raws[0] is None:
        return None
    return json.loads(raws[0]), [json.loads(r) if r is not None else None for r in raws[1:]]


@router.get("", access=HOME)
@router.get("/", access=HOME)
async def home(request: Request) -> Response:
    try:
        who = signed_in(request, STAFF_ROLES)
    except SignInNeeded:
        return RedirectResponse("/console/sign-in", status_code=303)
    return RedirectResponse(HOME_OF[who.role], status_code=303)


@router.get("/sign-in", access=PAGE)
async def sign_in_form(request: Request) -> Response:
    return render(request, "sign_in.html", None, None, None, development=not request.app.state.settings.production)


@router.post("/sign-in", access=PAGE)
async def sign_in(request: Request, token: Annotated[str, Form(max_length=8192)] = "") -> Response:
    state = request.app.state
    settings = state.settings
    if not same_origin(request):
        return render(request, "sign_in.html", None, None, None, 403, error=CROSS_SITE,
                      development=not settings.production)  # fmt: skip
    try:
        who = state.gate.check(f"Bearer {token.strip()}", None, STAFF_ROLES)
    except Denied as denied:
        request.scope["crm.principal"] = denied.who
        why = denied.detail
        if denied.who is not None and denied.who.kind == "customer":
            why = "customer tokens have no console: it is for the bank's marketing and sales staff"
        return render(request, "sign_in.html", None, None, None, 401, error=why, development=not settings.production)
    request.scope["crm.principal"] = who
    response = RedirectResponse(HOME_OF[who.role], status_code=303)
    max_age = int((who.expires_at or time.time()) - time.time())
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=max(max_age, 0),
        path="/console",
        httponly=True,
        samesite="strict",
        # production is served over TLS whatever a header says (the router may end TLS)
        secure=settings.production or request.url.scheme == "https",
    )
    return response


@router.post("/sign-out", access=SIGN_OUT)
async def sign_out(request: Request) -> Response:
    state = request.app.state
    if not same_origin(request):
        raise HTTPException(403, detail=CROSS_SITE)
    token = request.cookies.get(COOKIE)
    if token:
        try:
            who = state.gate.check(f"Bearer {token}", None, STAFF_ROLES)
        except Denied:
            who = None  # expired or already signed out: nothing left to revoke
        if who is not None:
            request.scope["crm.principal"] = who
            # the token is refused from now until it expires, by every API worker, cookie or bearer
            async with asyncio.timeout(state.settings.serving.redis_deadline_s):
                await state.gate.revoked.revoke(state.reader.text, who)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=state.settings.production or request.url.scheme == "https")  # fmt: skip
    return response


@router.get("/campaigns", access=CAMPAIGN_PAGES)
async def campaigns(request: Request) -> Response:
    who, reader = caller(request), request.app.state.reader

    async def read(sid: str):
        return await meta_of(reader, sid, reader.keys.campaigns(sid))

    sid, value = await reader.in_snapshot(read)
    if value is None:
        raise NoSnapshot
    meta, (listed,) = value
    channels = sorted({ch for c in listed for ch in c["channels"]})
    return render(request, "campaigns.html", who, sid, meta, campaigns=listed, channels=channels)


@router.get("/campaigns/{campaign_id}", access=SEGMENT_PAGES)
async def campaign(
    request: Request,
    campaign_id: segments.CampaignId,
    channel: Annotated[Channel | None, Query()] = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$")] = None,
) -> Response:
    who, reader, settings = caller(request), request.app.state.reader, request.app.state.settings
    start = int(cursor or 0)
    sid, segment = await segments.read_page(reader, settings, who, campaign_id, channel, start, PAGE_SIZE)
    value = await meta_of(reader, sid, reader.keys.campaigns(sid), reader.keys.performance(sid))
    if value is None:
        raise NoSnapshot
    meta, (listed, performance) = value
    summary = next(c for c in listed if c["campaign_id"] == campaign_id)
    days = (performance or {}).get(campaign_id, []) if meta.get("performance") else None
    return render(
        request,
        "campaign.html",
        who,
        sid,
        meta,
        campaign=summary,
        channel=channel,
        segment=segment,
        start=start,
        previous=str(max(start - PAGE_SIZE, 0)) if start else None,
        days=days,
        chart=performance_chart(days) if days else None,
        totals={k: sum(d[k] for d in days) for k in ("assigned", "contacted", "accepted", "value_pen")}
        if days
        else None,
        added=incremental(*(sum(d.get(k, 0) for d in days) for k in EXPERIMENT)) if days else None,
    )


@router.get("/campaigns/{campaign_id}/segment.csv", access=SEGMENT_PAGES)
async def campaign_csv(
    request: Request,
    campaign_id: segments.CampaignId,
    channel: Annotated[Channel | None, Query()] = None,
) -> Response:
    state = request.app.state
    return await segments.export_csv(state.reader, state.settings, caller(request), campaign_id, channel)


@router.get("/customers", access=CUSTOMER_PAGE)
async def customers(
    request: Request,
    customer_id: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    who, reader = caller(request), request.app.state.reader
    keys = reader.keys
    if customer_id is None or not customer_id.strip():
        sid, meta = await reader.json(keys.meta)
        return render(request, "customers.html", who, sid, meta, customer_id=None)
    wanted = customer_id.strip()
    cid = canonical_customer_id(wanted)
    if cid is None:
        sid, meta = await reader.json(keys.meta)
        error = "A customer id is a whole number, like 1042."
        return render(request, "customers.html", who, sid, meta, customer_id=wanted, error=error, status_code=422)
    # the API's own read (the route took the look-up quota); the audit layer records the view
    request.scope["crm.customer_id"] = cid
    status, body, _ = await request.app.state.read_offers(who, cid)
    answer = orjson.loads(body)
    if status not in (200, 404):
        raise HTTPException(status, detail=answer.get("detail"))
    offers = answer.get("offers", []) if status == 200 else []

    async def read(sid: str):
        value = await meta_of(reader, sid)
        if value is None:
            return None
        blob = await reader.raw.hget(keys.profile_bucket(sid, cid // BUCKET), str(cid))
        return value[0], blob

    sid, value = await reader.in_snapshot(read)
    if value is None:
        raise NoSnapshot
    meta, blob = value
    profile = decode_profile(blob, meta["profile_segments"]) if blob and meta.get("profile_segments") else None
    return render(
        request,
        "customers.html",
        who,
        sid,
        meta,
        customer_id=cid,
        offers=offers,
        profile=profile,
        status_code=200 if offers or profile else 404,
    )


def install(app) -> None:
    """The console's routes, its static files, and its answers to what its routes raise."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse("/console/sign-in", status_code=303)

    # on the console's pages, errors are pages too; elsewhere the API's JSON answers stand
    api_answers = dict(app.exception_handlers)

    def on_console(exc_class, status: int | None, message):
        async def handle(request: Request, exc: Exception) -> Response:
            if not request.url.path.startswith("/console"):
                return await api_answers[exc_class](request, exc)
            code = status or getattr(exc, "status_code", 500)
            who = request.scope.get("crm.principal")
            return render(request, "error.html", who, None, None, code, message=message(exc), status=code)

        app.add_exception_handler(exc_class, handle)

    on_console(StarletteHTTPException, None, lambda exc: exc.detail)
    on_console(segments.QuotaUsedUp, 429, lambda exc: f"Your {exc.detail}: it starts again at midnight UTC.")
    on_console(NoSnapshot, 503, lambda exc: "No snapshot is live: the daily run has not published one yet.")
    for unreachable in (aioredis.ConnectionError, aioredis.TimeoutError, TimeoutError):
        on_console(unreachable, 503, lambda exc: "The cache is unreachable: try again in a minute.")
