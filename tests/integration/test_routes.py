"""Every route of the read API, walked from the app itself on a real Redis snapshot: each says who
may call it, refuses everyone else, is on the audit trail, and, where it reads a customer, counts
against the caller's look-up quota (segments against the day's segment rows). A route added without
that, or a declaration the route does not keep, fails here."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from assignments import published_home
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route
from waits import fresh_minute

from crm.services import ensure_redis
from serving.access import COOKIE, LOOKUPS, SEGMENT_ROWS, GuardedRoute, access_of
from serving.api import create_app
from serving.audit import read_records
from serving.auth import CUSTOMERS, STAFF_ROLES, sign_dev_token

D = dt.date(2026, 11, 8)
LOOKUP_QUOTA, ROWS_QUOTA = 3, 25  # a segment page of this test reads 10 rows
SAMPLE = {"customer_id": "3", "campaign_id": "CMP-A"}
# what FastAPI and Starlette add themselves: the API's document and the packaged static files
NOT_ROUTES = {"/openapi.json", "/docs-assets", "/console/static"}
# public on purpose, and why (the security review's list): none reads a customer or a campaign
PUBLIC = {
    "/healthz": "Kubernetes' liveness probe",
    "/readyz": "Kubernetes' readiness probe",
    "/metrics": "Prometheus' scrape (its own port in production)",
    "/docs": "Swagger UI, outside production",
    "/console": "sends to the sign-in page or the person's own page",
    "/console/": "the same",
    "/console/sign-in": "the sign-in form, and the sign-in that checks the token given",
    "/console/sign-out": "signs out whoever the cookie names",
}


@pytest.fixture(scope="module")
def home_settings(settings):
    with published_home(
        settings,
        "routes-home",
        D,
        [("CMP-A", "SMS")],
        lookups_per_minute=LOOKUP_QUOTA,
        segment_rows_per_day=ROWS_QUOTA,
    ) as home:
        yield home


@pytest.fixture(scope="module")
def client(home_settings):
    with TestClient(create_app(ensure_redis(home_settings), home_settings), follow_redirects=False) as c:
        yield c


def _urls(route) -> list[str]:
    """The URLs a walk calls for ``route``: its sample; for a customer's id in the path, also a
    spelling the offers fast path leaves to FastAPI (``0003``), so the route itself is walked."""
    query = {p.name for p in route.dependant.query_params}
    suffix = "?limit=10" if "limit" in query else "?customer_id=3" if "customer_id" in query else ""
    url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m[1]], route.path) + suffix
    return [url, url.replace("/3/", "/0003/")] if "{customer_id}" in route.path else [url]


def _asked(url: str) -> int | None:
    """The customer a sample URL names."""
    return 3 if "/3/" in url or "/0003/" in url or "customer_id=3" in url else None


def _calls(app):
    """(method, route) of every route the app answers."""
    return [(m, r) for r in app.routes if isinstance(r, GuardedRoute) for m in sorted(r.methods)]


def _walk(app):
    """(method, route, URL) of every call the walk makes to a route that admits some roles."""
    return [(m, r, url) for m, r in _calls(app) if not access_of(r).public for url in _urls(r)]


class Caller:
    """A fresh caller of ``role`` (its own quota), as the route's credential scheme takes it."""

    count = 0

    def __init__(self, settings, role: str, console: bool):
        Caller.count += 1
        self.subject = str(900 + Caller.count) if role == "customer" else f"routes.{role}.{Caller.count}"
        token = sign_dev_token(settings, self.subject, role)
        self.headers = {} if console else {"Authorization": f"Bearer {token}"}
        self.cookies = {COOKIE: token} if console else {}

    def call(self, client, method: str, url: str):
        client.cookies.clear()
        for name, value in self.cookies.items():
            client.cookies.set(name, value, path="/console")
        return client.request(method, url, headers=self.headers)


def test_every_route_declares_who_may_call_it(client):
    app = client.app
    for route in app.routes:
        if isinstance(route, Mount | Route) and not isinstance(route, GuardedRoute):
            assert route.path in NOT_ROUTES, f"{route.path} is not a GuardedRoute: it declares no Access"
    for _, route in _calls(app):
        access = access_of(route)
        if access.public:
            assert route.path in PUBLIC, f"{route.path} is public ({access.public!r}) but not a known public route"
            continue
        reads_customer = (
            "customer_id" in {p.name for p in route.dependant.path_params + route.dependant.query_params}
            or access.roles == CUSTOMERS
        )
        if reads_customer:
            assert access.quota == LOOKUPS, f"{route.path} reads a customer without counting a look-up"
        if "{campaign_id}" in route.path:
            assert access.quota == SEGMENT_ROWS, f"{route.path} reads a segment without counting its rows"
    assert {r.path for _, r in _calls(app) if access_of(r).public} == set(PUBLIC)


def test_every_route_refuses_callers_without_its_roles_and_puts_them_on_record(client, home_settings):
    for method, route, url in _walk(client.app):
        access = access_of(route)
        client.cookies.clear()
        anonymous = client.request(method, url)
        if access.console:  # no sign-in: the sign-in page
            assert (anonymous.status_code, anonymous.headers.get("location")) == (303, "/console/sign-in"), url
        else:
            assert anonymous.status_code == 401, url
        refused_roles = [
            r for r in ("customer", *STAFF_ROLES) if r not in access.roles and not (access.console and r == "customer")
        ]
        for role in refused_roles:
            refused = Caller(home_settings, role, access.console).call(client, method, url)
            assert refused.status_code == 403, (url, role, refused.status_code)
        on_record = [r for r in read_records(home_settings.audit_dir) if r["what"] == f"{method} {url}"]
        assert [r["status"] for r in on_record] == [anonymous.status_code] + [403] * len(refused_roles), url
        assert {r["customer_id"] for r in on_record} == {_asked(url)}, (url, "the customer asked for is on record")


def test_every_route_admits_its_roles_counts_their_quota_and_puts_them_on_record(client, home_settings):
    for method, route, url in _walk(client.app):
        access = access_of(route)
        for role in access.roles:
            for attempt in range(2):  # once more if the quota's minute ended meanwhile
                fresh_minute()
                minute = int(time.time() // 60)
                caller = Caller(home_settings, role, access.console)
                answers = [caller.call(client, method, url).status_code for _ in range(LOOKUP_QUOTA + 1)]
                if attempt or int(time.time() // 60) == minute:
                    break
            assert set(answers) <= {200, 404, 429}, (url, role, answers)  # admitted, and nothing failed
            if access.quota == LOOKUPS:
                assert 429 not in answers[:LOOKUP_QUOTA] and answers[LOOKUP_QUOTA] == 429, (url, role, answers)
            elif access.quota == SEGMENT_ROWS:  # 10 or 20 rows a call: refused once past the day's 25
                first_refused = answers.index(429) if 429 in answers else None
                assert first_refused and set(answers[:first_refused]) == {200}, (url, role, answers)
                assert set(answers[first_refused:]) == {429}, (url, role, answers)
            else:
                assert 429 not in answers, (url, role, answers)
            mine = [r for r in read_records(home_settings.audit_dir) if r["who"] == caller.subject]
            assert [r["status"] for r in mine] == answers and {r["what"] for r in mine} == {f"{method} {url}"}, url
            customer = int(caller.subject) if access.roles == CUSTOMERS else _asked(url)
            assert {r["customer_id"] for r in mine} == {customer}, (url, role, "the customer read is on record")
