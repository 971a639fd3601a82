"""The console's sign-in and refusals over a real Redis (the pages themselves are driven in Chromium by
tests/e2e/test_crm_daily.py::TestConsole): only staff sign in, the session cookie cannot be read by
scripts or sent cross-site, every page names its snapshot and is audited, and errors are pages."""

from __future__ import annotations

import datetime as dt

import pytest
from assignments import assignments
from fastapi.testclient import TestClient
from waits import wait_until

from crm.services import ensure_redis
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.api import create_app
from serving.audit import read_records
from serving.auth import issue_keys, sign_dev_token
from serving.publish import publish_snapshot

D = dt.date(2026, 11, 6)


@pytest.fixture(scope="module")
def console(settings):
    s = settings.replace(home=settings.home / "console")
    s.ensure_dirs()
    with TestClient(create_app(ensure_redis(s), s)) as client:
        yield client, s


def sign_in(client, s, who: str, role: str, minutes: int = 60):
    return client.post(
        "/console/sign-in", data={"token": sign_dev_token(s, who, role, minutes)}, follow_redirects=False
    )


def test_with_no_snapshot_live_the_console_says_so_in_a_page(console):
    client, s = console
    sign_in(client, s, "ana.torres", "marketing")
    resp = client.get("/console/campaigns")
    assert resp.status_code == 503 and "text/html" in resp.headers["content-type"]
    assert "No snapshot is live" in resp.text
    client.cookies.clear()


def test_only_staff_sign_in_and_the_cookie_stays_out_of_scripts_and_other_sites(console):
    client, s = console
    assert client.get("/console/campaigns", follow_redirects=False).headers["location"] == "/console/sign-in"
    customer = sign_in(client, s, "7", "customer")
    assert customer.status_code == 401 and "customer tokens have no console" in customer.text
    assert "set-cookie" not in customer.headers
    forged = client.post("/console/sign-in", data={"token": "not-a-token"}, follow_redirects=False)
    assert forged.status_code == 401 and "set-cookie" not in forged.headers
    expired = sign_in(client, s, "ana.torres", "marketing", minutes=-5)
    assert expired.status_code == 401 and "expired" in expired.text

    resp = sign_in(client, s, "ana.torres", "marketing")
    assert resp.status_code == 303 and resp.headers["location"] == "/console/campaigns"
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert 3500 <= int(cookie.split("max-age=")[1].split(";")[0]) <= 3600  # until the token expires
    # the pages allow nothing from elsewhere, no inline script, no framing, no caching
    page = client.get("/console/sign-in")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    signed_out = client.post("/console/sign-out", follow_redirects=False)
    assert signed_out.status_code == 303 and 'crm_console=""' in signed_out.headers["set-cookie"]
    client.cookies.clear()


def test_pages_name_their_snapshot_are_audited_and_refuse_other_roles(console):
    client, s = console
    write_assignments(D, assignments(60, [("CMP-A", "SMS"), ("CMP-B", "EMAIL")]), ModelRef("m", "2"), s)
    live = publish_snapshot(D, s)
    sign_in(client, s, "luis.quispe", "sales")
    resp = client.get("/console/customers", params={"customer_id": "12"})
    assert resp.status_code == 200 and resp.headers["x-snapshot-id"] == live.snapshot_id
    assert live.snapshot_id in resp.text and "CMP-A" in resp.text
    # without customer_360 in this warehouse the snapshot has no profiles: offers only
    assert "Products held" not in resp.text
    bad = client.get("/console/customers", params={"customer_id": "12; drop"})
    assert bad.status_code == 422 and "whole number" in bad.text
    unknown = client.get("/console/customers", params={"customer_id": "999999"})
    assert unknown.status_code == 404 and "not in this snapshot" in unknown.text
    other = client.get("/console/campaigns")
    assert other.status_code == 403 and "Not for your role" in other.text
    records = [r for r in read_records(s.audit_dir) if r["what"] == "GET /console/customers?customer_id=12"]
    assert records[-1]["who"] == "luis.quispe" and records[-1]["customer_id"] == 12
    assert records[-1]["snapshot_id"] == live.snapshot_id and records[-1]["status"] == 200
    client.cookies.clear()

    sign_in(client, s, "ana.torres", "marketing")
    page = client.get("/console/campaigns/CMP-A", params={"cursor": "50"})
    assert page.status_code == 200 and "Customers 51–60 of 60" in page.text
    assert "published without campaign results" in page.text  # no campaign_performance here
    assert client.get("/console/campaigns/CMP-Z").status_code == 404
    # the console's CSV is the API's export, counted against the same daily quota
    keys = issue_keys(s.api_keys_path)
    csv = client.get("/console/campaigns/CMP-A/segment.csv")
    api = client.get("/v1/campaigns/CMP-A/customers", headers={"X-API-Key": keys["marketing"], "Accept": "text/csv"})
    assert csv.status_code == 200 and csv.text == api.text and csv.text.count("\n") == 61
    client.cookies.clear()


def test_a_campaign_page_says_what_the_campaign_added_against_its_control(console):
    """Over its 30 days the campaign page adds up the model arm's contacted members and the control's
    (as marts.campaign_performance has them per day) into incremental acceptances with an interval;
    a campaign with no control measured says so."""
    from crm.warehouse import warehouse

    client, s = console
    day = D + dt.timedelta(days=1)
    write_assignments(day, assignments(60, [("CMP-A", "SMS"), ("CMP-B", "EMAIL")]), ModelRef("m", "3"), s)
    columns = ("performance_date date, campaign_id varchar(32), channel varchar(16), assigned integer, "
               "held_out integer, contacted integer, accepted integer, conversion_rate decimal(9, 6), "
               "value_pen decimal(18, 2), treated integer, treated_accepted integer, control integer, "
               "control_accepted integer, incremental_acceptances decimal(18, 2), incremental_low decimal(18, 2), "
               "incremental_high decimal(18, 2)")  # fmt: skip
    with warehouse(s).begin() as session:
        session.execute(f"create table marts.campaign_performance ({columns})")
        for d in (day - dt.timedelta(days=1), day):  # each day: 600 contacted at 15%, 150 controls at 10%
            session.execute(
                "insert into marts.campaign_performance values (:d, 'CMP-A', 'SMS', 60, 3, 600, 90, 0.15, 1000, "
                "600, 90, 150, 15, 30, 0, 60), (:d, 'CMP-B', 'EMAIL', 60, 0, 100, 5, 0.05, 100, 0, 0, 0, 0, "
                "null, null, null)",
                {"d": d},
            )
    live = publish_snapshot(day, s)
    sign_in(client, s, "ana.torres", "marketing")
    # the API re-reads the live snapshot's id within a fraction of a second
    page = wait_until(lambda: client.get("/console/campaigns/CMP-A"),
                      until=lambda page: page.headers.get("x-snapshot-id") == live.snapshot_id,
                      message=f"the campaign page to show {live.snapshot_id}")  # fmt: skip
    assert page.status_code == 200
    # 1,200 treated at 15% against 300 controls at 10%: 60 more, give or take 1.96 x 1,200 x 0.0203
    # (the variance of 181/1,202 and 31/302: one acceptance and one refusal added to each arm)
    assert "60 incremental acceptances" in page.text and "(95% interval 12 to 108)" in page.text
    assert "1,200 customers of the model's arm" in page.text and "300 of the control" in page.text
    other = client.get("/console/campaigns/CMP-B")
    assert "No control measured in these 30 days yet" in other.text
    client.cookies.clear()
