"""Who may call each route of the read API, declared once where the route is declared, and enforced
by the route itself (docs/decisions/0022).

Every route is made by an ``AudienceRouter`` with an ``Access``: the roles it admits (or, for the
few public routes, why none is needed), whether the caller signs in by the console's cookie instead
of a header credential, and the quota a call counts against. ``GuardedRoute`` checks the credential
and takes the look-up quota before FastAPI reads the request's parameters, so a route cannot forget
either; a route without an ``Access`` cannot be made. The offers fast path (``serving.hotpath``)
reads the same declarations of the two routes it answers. The audit layer records every call under
``/v1/`` and ``/console`` (``serving.audit``), whatever route answers it, or none.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.routing import APIRoute

from serving.answers import REDIS_DOWN, REDIS_ERRORS
from serving.auth import (
    API_KEY_SCHEME,
    BEARER_SCHEME,
    CUSTOMERS,
    MAX_CUSTOMER_ID,
    STAFF_ROLES,
    Denied,
    Principal,
    canonical_customer_id,
)

LOOKUPS = "lookups"  # a read of one customer: the per-minute look-up quota (CRM_QUOTA_LOOKUPS_PER_MINUTE)
SEGMENT_ROWS = "segment_rows"  # a campaign's customers: the rows (and exports) of the day, counted as read
QUOTAS = (LOOKUPS, SEGMENT_ROWS)
COOKIE = "crm_console"


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a route: ``roles`` (with a bearer token or an integration key, or with the
    console's cookie when ``console``), and the ``quota`` a call counts against. A public route
    names instead why it needs no credential."""

    roles: tuple[str, ...] = ()
    quota: str | None = None
    console: bool = False
    public: str = ""

    def __post_init__(self) -> None:
        if bool(self.roles) == bool(self.public):
            raise ValueError(f"an Access names roles or why it is public, not both nor neither: {self}")
        if self.quota not in (None, *QUOTAS):
            raise ValueError(f"unknown quota {self.quota!r}: one of {', '.join(QUOTAS)}")
        if self.public and self.quota:
            raise ValueError(f"a public route counts against no caller's quota: {self}")

    def openapi(self) -> dict[str, Any]:
        """What the API's document says of it: the schemes and roles (``x-roles``), the quota."""
        if self.public:
            return {}
        return {**for_roles(*self.roles), **({"x-quota": self.quota} if self.quota else {})}


def authorize(request: Request, roles: tuple[str, ...]) -> Principal:
    """``Gate.check`` for a route (``GuardedRoute``): a plain call rather than a FastAPI dependency
    (resolving one costs more than the look-up it guards). The caller goes in the request's scope,
    where the audit layer finds it."""
    try:
        who = request.app.state.gate.check(
            request.headers.get("authorization"), request.headers.get("x-api-key"), roles
        )
    except Denied as denied:
        request.scope["crm.principal"] = denied.who
        raise HTTPException(denied.status, detail=denied.detail) from None
    request.scope["crm.principal"] = who
    return who


def for_roles(*roles: str) -> dict[str, Any]:
    """OpenAPI of a route admitting ``roles``: the schemes it takes and the roles it admits."""
    schemes = [{BEARER_SCHEME: []}] if roles == CUSTOMERS else [{BEARER_SCHEME: []}, {API_KEY_SCHEME: []}]
    return {"security": schemes, "x-roles": list(roles)}


class SignInNeeded(Exception):
    """A console page without a valid sign-in: the console answers with its sign-in page."""

    def __init__(self, why: str | None = None):
        self.why = why


def signed_in(request: Request, roles: tuple[str, ...]) -> Principal:
    """The member of staff the console's cookie names, if their role is one of ``roles``."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded
    try:
        who = request.app.state.gate.check(f"Bearer {token}", None, STAFF_ROLES)
    except Denied as denied:
        request.scope["crm.principal"] = denied.who
        raise SignInNeeded(denied.detail) from None
    request.scope["crm.principal"] = who
    if who.role not in roles:
        raise HTTPException(403, detail=f"the {who.role} role has no access to this page")
    return who


def caller(request: Request) -> Principal:
    """Who called: the principal the route's ``Access`` admitted."""
    return request.scope["crm.principal"]


async def take_lookup(state, who: Principal) -> float | None:
    """Count one look-up of ``who`` (the app's ``state.lookups``); None when it fits, else the
    seconds until the quota's minute ends. A caller new to this worker this minute is read from
    Redis (through ``state.reader``) first, within the reader's deadline."""
    wait = state.lookups.take_known(who)
    if wait is False:
        async with asyncio.timeout(state.reader.deadline_s):
            wait = await state.lookups.take(state.reader.text, who)
    return wait


def as_customer_id(text: str) -> int | None:
    """The customer id a request names, as FastAPI will read it (``" 3"``, ``"0003"``: 3), for the
    audit trail; None when it names none."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 0 < value <= MAX_CUSTOMER_ID else None


def lookups_used_up(limit: int) -> str:
    return f"quota of {limit} look-ups a minute used up"


class GuardedRoute(APIRoute):
    """A route that enforces the ``Access`` its endpoint was declared with (``AudienceRouter``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        access = getattr(endpoint, "crm_access", None)
        if not isinstance(access, Access):
            raise TypeError(f"the route {path} declares no Access: every route says who may call it")
        self.access = access
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        access = self.access
        if access.public:
            return handler

        async def guarded(request: Request):
            # whose data the call asks for is on record, refused or not (the route records the id it read)
            asked = request.path_params.get("customer_id") or request.query_params.get("customer_id")
            if asked is not None:
                request.scope["crm.customer_id"] = as_customer_id(asked)
            who = signed_in(request, access.roles) if access.console else authorize(request, access.roles)
            if access.roles == CUSTOMERS:  # a customer reads their own
                request.scope["crm.customer_id"] = canonical_customer_id(who.subject)
            if access.quota == LOOKUPS:
                state = request.app.state
                try:
                    wait = await take_lookup(state, who)
                except REDIS_ERRORS:  # the quota cannot be counted: refused, as every read is meanwhile
                    raise HTTPException(503, detail=REDIS_DOWN) from None
                if wait is not None:
                    raise HTTPException(
                        429,
                        detail=lookups_used_up(state.lookups.limit),
                        headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    )
            return await handler(request)

        return guarded


class AudienceRouter(APIRouter):
    """The routes of one audience, each declared with its ``Access`` (the audience's by default)."""

    def __init__(self, access: Access | None = None, **kwargs: Any):
        super().__init__(route_class=GuardedRoute, **kwargs)
        self.access = access

    def route_with(self, path: str, methods: list[str], access: Access | None, **kwargs: Any):
        access = access or self.access
        if access is None:
            raise TypeError(f"the route {path} declares no Access: every route says who may call it")
        kwargs["openapi_extra"] = {**access.openapi(), **(kwargs.get("openapi_extra") or {})}
        register = self.api_route(path, methods=methods, **kwargs)

        def declare(endpoint):
            endpoint.crm_access = access
            return register(endpoint)

        return declare

    def get(self, path: str, *, access: Access | None = None, **kwargs: Any):  # type: ignore[override]
        return self.route_with(path, ["GET"], access, **kwargs)

    def post(self, path: str, *, access: Access | None = None, **kwargs: Any):  # type: ignore[override]
        return self.route_with(path, ["POST"], access, **kwargs)


def access_of(route) -> Access | None:
    """The ``Access`` a route of the app was declared with (None: a route made some other way)."""
    return getattr(route, "access", None)
